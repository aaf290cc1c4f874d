using Parquet;

namespace DistTrain.Data.Tests;

/// <summary>Ranks that each read their <see cref="WindowRange"/> train every window of an epoch exactly once.</summary>
public class WindowRangeTests
{
    const int Vocab = 500, Eot = 499, SeqLen = 10;

    static readonly int[][] A = Fixture.Documents(100, Eot, 0);
    static readonly int[][] B = // 15..54 tokens: windows inside one document
        [.. Enumerable.Range(0, 12).Select(d => Enumerable.Range(0, 15 + d * 13 % 40).Select(i => (d * 31 + i * 17) % Eot).ToArray())];
    static readonly int[][] C = Fixture.Documents(100, Eot, 160);
    static readonly int[][] D = Fixture.Documents(30, Eot, 300);
    static readonly int[][] All = [.. A, .. B, .. C, .. D];

    // pinned (computed outside C#): 1193 + 450 + 1206 + 364 = 3213 tokens with end-of-texts (11 empty documents)
    // = 292 windows of 11, 1 token dropped
    const int EpochWindows = 292;

    static string[] WriteFiles(TempDir dir)
    {
        Fixture.Write(dir["a.parquet"], A, [30, 1, 45], CompressionMethod.Zstd);
        Fixture.Write(dir["b.parquet"], B, [2, 1], CompressionMethod.Snappy, int64: true);
        Fixture.Write(dir["c.parquet"], C, [7, 13], CompressionMethod.Gzip, layout: Layout.ListNullable);
        Fixture.Write(dir["d.parquet"], D, [1, 4], CompressionMethod.None, layout: Layout.LegacyRepeated);
        return [dir["a.parquet"], dir["b.parquet"], dir["c.parquet"], dir["d.parquet"]];
    }

    static WindowReaderOptions Options(string[] files, WindowRange? range = null, bool loop = false) =>
        new(files, SeqLen, Eot, Vocab, Loop: loop, ReadAhead: 4, Range: range);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void Ranks_together_yield_each_window_of_the_epoch_exactly_once(int worldSize)
    {
        using var dir = new TempDir();
        string[] files = WriteFiles(dir);
        List<(long[] Window, long Global, DataCursor After)> single;
        using (var reader = new TokenWindowReader(Options(files)))
            single = Fixture.ReadIndexed(reader, SeqLen);
        Assert.Equal(Fixture.ExpectedWindows(All, Eot, SeqLen), single.Select(w => w.Window));
        Assert.Equal(Enumerable.Range(0, EpochWindows).Select(i => (long)i), single.Select(w => w.Global));

        long total = DatasetWindows.Count(files, "input_ids", SeqLen);
        Assert.Equal(EpochWindows, total);
        int perRank = EpochWindows / worldSize;
        var union = new List<(long[] Window, long Global)>();
        for (int rank = 0; rank < worldSize; rank++)
        {
            using var reader = new TokenWindowReader(Options(files, WindowRange.ForRank(total, rank, worldSize)));
            var share = Fixture.ReadIndexed(reader, SeqLen);
            Assert.Equal(perRank, share.Count);
            for (int k = 0; k < share.Count; k++)   // the cursor a rank keeps is the single reader's, less the windows it skipped
                Assert.Equal(single[(int)share[k].Global].After with { Windows = k + 1 }, share[k].After);
            Assert.False(reader.TryNext(new long[SeqLen + 1], out long none));
            Assert.Equal(-1, none);
            union.AddRange(share.Select(w => (w.Window, w.Global)));
        }
        // in rank order the shares are windows 0, 1, ..., W·M−1: disjoint, and none left out but the remainder
        Assert.Equal(single.Take(worldSize * perRank).Select(w => w.Global), union.Select(w => w.Global));
        Assert.Equal(single.Take(worldSize * perRank).Select(w => w.Window), union.Select(w => w.Window));
    }

    [Fact]
    public void A_rank_starts_where_the_footers_put_its_first_window()
    {
        using var dir = new TempDir();
        string[] files = WriteFiles(dir);
        // window r·M starts at token r·M·11, located by hand: mid-document in files 0, 1 and 2
        (int WorldSize, int Rank, DataCursor Start)[] cases =
        [
            (2, 1, new DataCursor(0, 1, 7, 0, 2, 0)),
            (3, 1, new DataCursor(0, 0, 3, 12, 12, 0)),   // document 88 (18 tokens), after row group 2's 45 rows
            (3, 2, new DataCursor(0, 2, 4, 0, 9, 0)),
            (4, 1, new DataCursor(0, 0, 2, 36, 2, 0)),
            (4, 3, new DataCursor(0, 2, 6, 3, 8, 0)),
        ];
        foreach (var (worldSize, rank, start) in cases)
        {
            using var reader = new TokenWindowReader(Options(files, WindowRange.ForRank(EpochWindows, rank, worldSize)));
            Assert.Equal(start, reader.Cursor);
        }
    }

    [Fact]
    public void A_rank_never_decodes_the_row_groups_before_its_range()
    {
        using var dir = new TempDir();
        // row group 0 holds an id outside the vocabulary: decoding it fails, so only a reader that skips it succeeds
        int[][] docs = [[5, 700, 6], .. Fixture.Documents(60, Eot, 1)];
        Fixture.Write(dir["p.parquet"], docs, [20]);
        string[] files = [dir["p.parquet"]];
        long total = DatasetWindows.Count(files, "input_ids", SeqLen);
        Assert.Equal(Fixture.ExpectedWindows(docs, Eot, SeqLen).Count, total);

        WindowRange second = WindowRange.ForRank(total, 1, 2);
        using (var rank1 = new TokenWindowReader(Options(files, second)))
        {
            Assert.True(rank1.Cursor.RowGroup > 0, $"rank 1 starts at {rank1.Cursor}, which should lie past row group 0");
            Assert.Equal(Fixture.ExpectedWindows(docs, Eot, SeqLen).Skip((int)second.First).Take((int)second.Count),
                Fixture.ReadIndexed(rank1, SeqLen).Select(w => w.Window));
        }
        var e = Assert.Throws<DataException>(() => new TokenWindowReader(Options(files, WindowRange.ForRank(total, 0, 2))));
        Assert.Contains("row group 0, row 0: token id 700", e.Message);
    }

    [Fact]
    public void A_rank_loops_over_its_range_and_resumes_from_any_of_its_cursors()
    {
        using var dir = new TempDir();
        string[] files = WriteFiles(dir);
        WindowRange range = WindowRange.ForRank(EpochWindows, 1, 3);   // [97, 194)
        var options = Options(files, range, loop: true);
        List<(long[] Window, long Global, DataCursor After)> run;
        DataCursor fresh;
        using (var reader = new TokenWindowReader(options))
        {
            fresh = reader.Cursor;
            run = Fixture.ReadIndexed(reader, SeqLen, 2 * 97 + 10);   // two epochs and the start of a third
        }
        var expected = Fixture.ExpectedWindows(All, Eot, SeqLen);
        for (int k = 0; k < run.Count; k++)
        {
            Assert.Equal(97 + k % 97, run[k].Global);
            Assert.Equal(expected[97 + k % 97], run[k].Window);
            Assert.Equal(k / 97, run[k].After.Epoch);
            Assert.Equal(k + 1, run[k].After.Windows);
        }
        Assert.Equal(new DataCursor(0, 2, 4, 0, 9, 97), run[96].After);   // at window 194: rank 2's first
        Assert.Equal(run[96].After with { Epoch = 1, Windows = 194 }, run[193].After);

        // the start cursor, mid-range, the range's last window (the epoch turns on the next one), into epoch 1
        foreach (int k in new[] { -1, 0, 1, 40, 95, 96, 97, 150, 193 })
        {
            DataCursor at = k < 0 ? fresh : run[k].After;
            using var resumed = new TokenWindowReader(options with { ReadAhead = 1 + (k + 7) % 5 }, DataCursor.FromJson(at.ToJson()));
            Assert.Equal(at, resumed.Cursor);
            Assert.Equal(run.Skip(k + 1).Take(10), Fixture.ReadIndexed(resumed, SeqLen, 10));
        }
        using (var restarted = new TokenWindowReader(options, DataCursor.Start))   // Start means afresh: the range's first window
            Assert.Equal(run.Take(10), Fixture.ReadIndexed(restarted, SeqLen, 10));
        using (var single = new TokenWindowReader(options with { Loop = false }, run[96].After))
            Assert.False(single.TryNext(new long[SeqLen + 1]));
    }

    [Theory]
    [InlineData(1, 1606)]
    [InlineData(SeqLen, EpochWindows)]
    [InlineData(37, 84)]
    [InlineData(100, 31)]
    [InlineData(400, 8)]
    public void Count_is_the_number_of_windows_a_single_pass_yields(int seqLen, int windows)
    {
        using var dir = new TempDir();
        string[] files = WriteFiles(dir);
        using var reader = new TokenWindowReader(new WindowReaderOptions(files, seqLen, Eot, Vocab, Loop: false));
        Assert.Equal(windows, Fixture.ReadWindows(reader, int.MaxValue, seqLen).Count);
        Assert.Equal(windows, DatasetWindows.Count(files, "input_ids", seqLen));
    }

    [Fact]
    public void Ranks_share_the_windows_evenly_and_refuse_more_ranks_than_windows()
    {
        Assert.Equal([new(0, 3), new(3, 3), new(6, 3)], Enumerable.Range(0, 3).Select(r => WindowRange.ForRank(10, r, 3)));   // window 9 unused
        Assert.Equal(new WindowRange(4, 1), WindowRange.ForRank(5, 4, 5));
        Assert.Equal(new WindowRange(0, 292), WindowRange.ForRank(292, 0, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => WindowRange.ForRank(10, 3, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => WindowRange.ForRank(10, 0, 0));

        using var dir = new TempDir();
        string[] files = WriteFiles(dir);
        var e = Assert.Throws<DataException>(() => WindowRange.ForRank(DatasetWindows.Count(files, "input_ids", 400), 0, 9));
        Assert.Contains("holds 8 window(s) per epoch, fewer than the 9 ranks", e.Message);
        Assert.Contains("lower the world size or train.seq_len, or add data", e.Message);
    }

    [Fact]
    public void Ranges_and_cursors_that_do_not_fit_are_refused()
    {
        using var dir = new TempDir();
        string[] files = WriteFiles(dir);
        string Refusal(WindowReaderOptions options, DataCursor? start = null) =>
            Assert.Throws<DataException>(() => new TokenWindowReader(options, start)).Message;

        Assert.Contains("window range [290, 293) reaches past the 292 windows of an epoch (3213 tokens / SeqLen+1 = 11)",
            Refusal(Options(files, new WindowRange(290, 3))));
        Assert.Throws<ArgumentOutOfRangeException>(() => new TokenWindowReader(Options(files, new WindowRange(5, 0))));

        DataCursor rank0;
        using (var reader = new TokenWindowReader(Options(files, WindowRange.ForRank(EpochWindows, 0, 3))))
        {
            Fixture.ReadWindows(reader, 5, SeqLen);
            rank0 = reader.Cursor;
        }
        string other = Refusal(Options(files, WindowRange.ForRank(EpochWindows, 1, 3)), rank0);
        Assert.Contains("global window 5, outside this reader's range [97, 194)", other);
        Assert.Contains("world size", other);

        string seqLen = Refusal(Options(files, new WindowRange(0, 100)) with { SeqLen = 9 }, rank0);   // token 55 of windows of 10
        Assert.Contains("points at token 55 of the epoch, which is no window boundary for SeqLen+1 = 10", seqLen);
    }

    [Fact]
    public void A_row_group_that_disagrees_with_its_footer_stops_a_rank()
    {
        using var dir = new TempDir();
        string[] files = WriteFiles(dir);
        using var reader = new TokenWindowReader(Options(files, WindowRange.ForRank(EpochWindows, 0, 1)) with { ReadAhead = 1 });
        // the footers are read; file b is not opened until the stream reaches it, some 100 windows on
        Fixture.Write(dir["b.parquet"], [.. B.Select(d => d[..^1])], [2, 1], CompressionMethod.Snappy, int64: true);
        var e = Assert.Throws<DataException>(() => Fixture.ReadWindows(reader, int.MaxValue, SeqLen));
        Assert.Contains($"{dir["b.parquet"]}: row group 0 holds 43 tokens with end-of-text markers, but its footer implies 45", e.Message);
    }
}
