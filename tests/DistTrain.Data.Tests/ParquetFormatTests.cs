using Parquet;

namespace DistTrain.Data.Tests;

/// <summary>The same documents stored every way Parquet allows must give the same windows.</summary>
public class ParquetFormatTests
{
    const int Vocab = 1000, Eot = 999, SeqLen = 16;
    static readonly int[][] Docs = Fixture.Documents(300, Eot);   // ids < 999; 14 empty documents

    public static TheoryData<CompressionMethod, bool, Layout, int[], EncodingHint> Variants => new()
    {
        { CompressionMethod.Zstd, false, Layout.List, [300], EncodingHint.Default },
        { CompressionMethod.Snappy, false, Layout.List, [7, 50, 1, 100], EncodingHint.Default },
        { CompressionMethod.Gzip, true, Layout.List, [64], EncodingHint.Default },
        { CompressionMethod.None, true, Layout.ListNullable, [1, 2, 3, 5, 8, 13], EncodingHint.Default },
        { CompressionMethod.Snappy, false, Layout.ListNullable, [299, 1], EncodingHint.Default },
        { CompressionMethod.Zstd, true, Layout.LegacyRepeated, [33], EncodingHint.Default },
        { CompressionMethod.None, false, Layout.LegacyRepeated, [150], EncodingHint.Default },
        { CompressionMethod.Zstd, false, Layout.List, [50], EncodingHint.DeltaBinaryPacked },
        { CompressionMethod.Gzip, true, Layout.ListNullable, [120], EncodingHint.DeltaBinaryPacked },
        { CompressionMethod.Snappy, false, Layout.List, [90], EncodingHint.ByteSplitStream },
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public void Every_encoding_yields_the_reference_windows(CompressionMethod compression, bool int64, Layout layout, int[] rowGroups, EncodingHint encoding)
    {
        using var dir = new TempDir();
        Fixture.Write(dir["d.parquet"], Docs, rowGroups, compression, int64, layout, encoding: encoding);
        using var reader = new TokenWindowReader(new WindowReaderOptions([dir["d.parquet"]], SeqLen, Eot, Vocab, Loop: false, ReadAhead: 3));

        var windows = Fixture.ReadWindows(reader, int.MaxValue, SeqLen);

        Assert.Equal(Fixture.ExpectedWindows(Docs, Eot, SeqLen), windows);
        // pinned (computed outside C#): 3289 document tokens + 300 end-of-texts = 3589 = 211 windows of 17, 2 dropped;
        // document 0 is empty, document 1 = 31, 48, 65, ...
        Assert.Equal(211, windows.Count);
        Assert.Equal([999, 31, 48, 65, 82, 99, 116, 133, 999, 62, 79, 96, 113, 130, 147, 164, 181], windows[0]);
        Assert.Equal(0x54018F52ED49EEFDUL, Fixture.Checksum(windows));
        Assert.Equal(3589, reader.TokensPerEpoch);
    }
}
