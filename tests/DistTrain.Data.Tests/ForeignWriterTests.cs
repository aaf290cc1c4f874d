namespace DistTrain.Data.Tests;

/// <summary>
/// Files written by a Parquet implementation other than Parquet.Net (parquet-wasm, i.e. the Rust `parquet` crate
/// of arrow-rs; see Fixtures/README.md) must give the windows the reference packing gives. They store input_ids as
/// pyarrow does: an optional LIST of optional elements, dictionary-encoded, data page v1.
/// </summary>
public class ForeignWriterTests
{
    const int Vocab = 251, Eot = 250, SeqLen = 15;

    /// <summary>The documents generate.mjs writes: 40 of them, document d has 5 + (d·7 mod 23) tokens, token k = (d·31 + k·17) mod 250.</summary>
    static readonly int[][] Docs =
        [.. Enumerable.Range(0, 40).Select(d => Enumerable.Range(0, 5 + d * 7 % 23).Select(k => (d * 31 + k * 17) % 250).ToArray())];

    static readonly string[] Names =
    [
        "arrowrs_int32_snappy_3rg.parquet",    // int32, SNAPPY, 3 row groups (14+14+12 rows)
        "arrowrs_int64_zstd_2rg.parquet",      // int64, ZSTD, 2 row groups (20+20)
        "arrowrs_int32_gzip.parquet",          // int32, GZIP, 1 row group
        "arrowrs_int64_uncompressed.parquet",  // int64, UNCOMPRESSED, 1 row group
    ];

    public static TheoryData<string> Files => new(Names);

    static string FixturePath(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", name);

    static (List<long[]> Windows, long TokensPerEpoch) Read(string name)
    {
        string path = FixturePath(name);
        Assert.True(File.Exists(path), $"{path} is missing; Fixtures/*.parquet should be copied to the test output");
        using var reader = new TokenWindowReader(new WindowReaderOptions([path], SeqLen, Eot, Vocab, Loop: false, ReadAhead: 3));
        return (Fixture.ReadWindows(reader, int.MaxValue, SeqLen), reader.TokensPerEpoch);
    }

    [Theory]
    [MemberData(nameof(Files))]
    public void Foreign_file_yields_the_reference_windows(string name)
    {
        var (windows, tokensPerEpoch) = Read(name);

        Assert.Equal(Fixture.ExpectedWindows(Docs, Eot, SeqLen), windows);
        // pinned (computed outside C#): 646 document tokens + 40 end-of-texts = 686 = 42 windows of 16, 14 dropped
        Assert.Equal(42, windows.Count);
        Assert.Equal([0, 17, 34, 51, 68, 250, 31, 48, 65, 82, 99, 116, 133, 150, 167, 184], windows[0]);
        Assert.Equal([183, 200, 217, 250, 209, 226, 243, 10, 27, 44, 61, 78, 95, 112, 129, 146], windows[^1]);
        Assert.Equal(686, tokensPerEpoch);   // no empty documents and no nulls, so the footer count is exact
        Assert.Equal(42, DatasetWindows.Count([FixturePath(name)], "input_ids", SeqLen));
    }

    [Theory]
    [MemberData(nameof(Files))]
    public void Three_ranks_share_a_foreign_file_window_by_window(string name)
    {
        string[] files = [FixturePath(name)];
        var expected = Fixture.ExpectedWindows(Docs, Eot, SeqLen);
        for (int rank = 0; rank < 3; rank++)
        {
            WindowRange range = WindowRange.ForRank(DatasetWindows.Count(files, "input_ids", SeqLen), rank, 3);   // 14 windows each
            using var reader = new TokenWindowReader(new WindowReaderOptions(files, SeqLen, Eot, Vocab, Loop: false, ReadAhead: 3, Range: range));
            var share = Fixture.ReadIndexed(reader, SeqLen);
            Assert.Equal(Enumerable.Range(14 * rank, 14).Select(i => (long)i), share.Select(w => w.Global));
            Assert.Equal(expected.Skip(14 * rank).Take(14), share.Select(w => w.Window));
        }
    }

    [Fact]
    public void All_foreign_files_yield_identical_windows()
    {
        var all = Names.Select(name => Read(name).Windows).ToList();

        Assert.Equal(4, all.Count);
        foreach (var windows in all.Skip(1))
            Assert.Equal(all[0], windows);
    }
}
