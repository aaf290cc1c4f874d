using Parquet;

namespace DistTrain.Data.Tests;

/// <summary>A reader started from any cursor continues exactly like the reader that produced the cursor.</summary>
public class CursorResumeTests
{
    const int Vocab = 500, Eot = 499, SeqLen = 10;

    // three files of uneven row groups; one epoch = 2861 document tokens + 260 end-of-texts = 3121 = 283 windows of 11, 8 dropped
    static string[] WriteFiles(TempDir dir)
    {
        Fixture.Write(dir["a.parquet"], Fixture.Documents(100, Eot, 0), [30, 1, 45], CompressionMethod.Zstd);
        Fixture.Write(dir["b.parquet"], Fixture.Documents(60, Eot, 100), [60], CompressionMethod.Snappy, int64: true);
        Fixture.Write(dir["c.parquet"], Fixture.Documents(100, Eot, 160), [7, 13], CompressionMethod.Gzip, layout: Layout.ListNullable);
        return [dir["a.parquet"], dir["b.parquet"], dir["c.parquet"]];
    }

    [Fact]
    public void Resuming_from_any_cursor_yields_the_uninterrupted_windows()
    {
        using var dir = new TempDir();
        string[] files = WriteFiles(dir);
        var options = new WindowReaderOptions(files, SeqLen, Eot, Vocab, ReadAhead: 5);
        var cursors = new List<DataCursor>();
        List<long[]> run;
        using (var reader = new TokenWindowReader(options))
            run = Fixture.ReadWindows(reader, 600, SeqLen, cursors);   // ~2.5 epochs
        Assert.Equal(Fixture.ExpectedWindows(Fixture.Documents(260, Eot), Eot, SeqLen, epochs: 3).Take(600), run);
        Assert.Equal(run.Take(283), run.Skip(283).Take(283));   // the second epoch starts at window 283

        // mid row group, mid document, other files, just before / at / after the epoch boundary
        foreach (int k in new[] { 0, 1, 17, 90, 150, 281, 282, 283, 284, 500 })
        {
            DataCursor at = cursors[k];
            using var resumed = new TokenWindowReader(options with { ReadAhead = 1 + k % 7 }, DataCursor.FromJson(at.ToJson()));
            Assert.Equal(at, resumed.Cursor);
            var after = new List<DataCursor>();
            var next = Fixture.ReadWindows(resumed, 60, SeqLen, after);
            Assert.Equal(run.Skip(k + 1).Take(60), next);
            Assert.Equal(cursors.Skip(k + 1).Take(60), after);
        }
    }

    [Fact]
    public void Cursors_name_files_row_groups_rows_and_epochs()
    {
        using var dir = new TempDir();
        string[] files = WriteFiles(dir);
        var cursors = new List<DataCursor>();
        using (var reader = new TokenWindowReader(new WindowReaderOptions(files, SeqLen, Eot, Vocab)))
            Fixture.ReadWindows(reader, 290, SeqLen, cursors);

        Assert.Equal(new DataCursor(0, 0, 0, 2, 2, 1), cursors[0]);   // docs 0 (empty), 1 (7 tokens), then 2 tokens of doc 2
        Assert.Equal(new DataCursor(0, 2, 9, 12, 12, 283), cursors[282]);   // the 8-token tail that epoch 0 drops
        Assert.Equal(new DataCursor(1, 0, 0, 2, 2, 284), cursors[283]);
    }

    [Fact]
    public void A_cursor_at_the_end_of_a_single_pass_yields_nothing_more()
    {
        using var dir = new TempDir();
        string[] files = WriteFiles(dir);
        var options = new WindowReaderOptions(files, SeqLen, Eot, Vocab, Loop: false);
        DataCursor end;
        using (var reader = new TokenWindowReader(options))
        {
            Assert.Equal(283, Fixture.ReadWindows(reader, int.MaxValue, SeqLen).Count);
            end = reader.Cursor;
        }
        using var resumed = new TokenWindowReader(options, end);
        Assert.False(resumed.TryNext(new long[SeqLen + 1]));
    }

    [Fact]
    public void Cursor_json_round_trips()
    {
        var cursor = new DataCursor(3, 12, 4, 1023, 77, 123_456_789_012);
        string json = cursor.ToJson();
        Assert.Equal("""{"epoch":3,"file":12,"rowGroup":4,"row":1023,"token":77,"windows":123456789012}""", json);
        Assert.Equal(cursor, DataCursor.FromJson(json));
        Assert.Contains("not valid JSON", Assert.Throws<DataException>(() => DataCursor.FromJson("{epoch:")).Message);
        Assert.Contains("negative", Assert.Throws<DataException>(() => DataCursor.FromJson("""{"epoch":0,"file":-1,"rowGroup":0,"row":0,"token":0,"windows":0}""")).Message);
    }
}
