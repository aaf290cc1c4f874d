using Parquet;

namespace DistTrain.Data.Tests;

/// <summary>The packing rule on a stream small enough to write out by hand.</summary>
public class PackingTests
{
    const int Eot = 9, SeqLen = 3;
    static readonly int[][] Docs = [[1, 2, 3], [4, 5], [6]];   // stream: 1 2 3 9 | 4 5 9 6 | 9 (dropped)

    [Fact]
    public void Documents_are_joined_by_end_of_text_and_the_tail_is_dropped()
    {
        using var dir = new TempDir();
        Fixture.Write(dir["a.parquet"], Docs, [2]);
        using var reader = new TokenWindowReader(new WindowReaderOptions([dir["a.parquet"]], SeqLen, Eot, 10, Loop: false));

        var cursors = new List<DataCursor>();
        var windows = Fixture.ReadWindows(reader, 10, SeqLen, cursors);

        Assert.Equal([[1, 2, 3, 9], [4, 5, 9, 6]], windows);
        // after window 1: row group 0, row 1 (doc [4,5]) from its start; after window 2: row group 1, row 0
        // (doc [6]), token 1 = its end-of-text, the tail that an epoch drops
        Assert.Equal([new DataCursor(0, 0, 0, 1, 0, 1), new DataCursor(0, 0, 1, 0, 1, 2)], cursors);
        Assert.False(reader.TryNext(new long[SeqLen + 1]));
        Assert.Equal(new DataCursor(0, 0, 1, 0, 1, 2), reader.Cursor);
    }

    [Fact]
    public void Loop_starts_the_next_epoch_at_the_first_file()
    {
        using var dir = new TempDir();
        Fixture.Write(dir["a.parquet"], Docs, [3]);
        using var reader = new TokenWindowReader(new WindowReaderOptions([dir["a.parquet"]], SeqLen, Eot, 10));

        var cursors = new List<DataCursor>();
        var windows = Fixture.ReadWindows(reader, 5, SeqLen, cursors);

        Assert.Equal([[1, 2, 3, 9], [4, 5, 9, 6], [1, 2, 3, 9], [4, 5, 9, 6], [1, 2, 3, 9]], windows);
        Assert.Equal(new DataCursor(1, 0, 0, 1, 0, 3), cursors[2]);
        Assert.Equal(new DataCursor(2, 0, 0, 1, 0, 5), cursors[4]);
        Assert.Equal(4 + 3 + 2, reader.TokensPerEpoch);
    }

    [Fact]
    public void A_window_ending_on_the_last_end_of_text_leaves_the_cursor_at_the_epoch_end()
    {
        using var dir = new TempDir();
        Fixture.Write(dir["a.parquet"], [[1, 2, 3], [4, 5, 6]], [1]);   // 8 tokens = 2 windows of 4
        using var reader = new TokenWindowReader(new WindowReaderOptions([dir["a.parquet"]], SeqLen, Eot, 10));

        var cursors = new List<DataCursor>();
        var windows = Fixture.ReadWindows(reader, 3, SeqLen, cursors);

        Assert.Equal([[1, 2, 3, 9], [4, 5, 6, 9], [1, 2, 3, 9]], windows);
        Assert.Equal(new DataCursor(0, 1, 0, 0, 0, 2), cursors[1]);   // File == file count: the epoch's end
    }

    [Fact]
    public void Empty_documents_still_contribute_their_end_of_text()
    {
        using var dir = new TempDir();
        Fixture.Write(dir["a.parquet"], [[1], [], [2, 3]], [3], CompressionMethod.None, layout: Layout.ListNullable);
        using var reader = new TokenWindowReader(new WindowReaderOptions([dir["a.parquet"]], 5, Eot, 10, Loop: false));

        Assert.Equal([[1, 9, 9, 2, 3, 9]], Fixture.ReadWindows(reader, 10, 5));
    }
}
