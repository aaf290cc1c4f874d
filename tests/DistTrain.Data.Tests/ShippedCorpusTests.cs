using System.Text;

namespace DistTrain.Data.Tests;

/// <summary>configs/corpus/kjv as shipped: the counts its README states, and text that decodes.</summary>
public class ShippedCorpusTests
{
    static string CorpusDir()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "configs", "corpus", "kjv");
            if (File.Exists(Path.Combine(candidate, DatasetManifest.FileName))) return candidate;
        }
        throw new DirectoryNotFoundException($"configs/corpus/kjv not found above {AppContext.BaseDirectory}; run configs/corpus/kjv/make-corpus.sh");
    }

    [Fact]
    public void Kjv_counts_match_the_manifest_and_validation_starts_at_genesis_50()
    {
        string dir = CorpusDir();
        var manifest = DatasetManifest.Read(dir);
        Assert.Equal(("byte", 257, 256), (manifest.Tokenizer, manifest.VocabSize, manifest.EndOfText));
        Assert.Equal((1166L, 23L, 4_312_278L, 92_134L), (manifest.TrainDocuments, manifest.ValDocuments, manifest.TrainTokens, manifest.ValTokens));

        using var train = new TokenWindowReader(new WindowReaderOptions(manifest.TrainPaths(dir), 256, 256, 257));
        Assert.Equal(4_312_278 + 1166, train.TokensPerEpoch);

        using var val = new TokenWindowReader(new WindowReaderOptions(manifest.ValPaths(dir), 63, 256, 257, Loop: false));
        var window = new long[64];
        Assert.True(val.TryNext(window));
        Assert.Equal("Ge50:1 And Joseph fell upon his father's face, and wept upon him",
            Encoding.ASCII.GetString(window.Select(t => (byte)t).ToArray()));
        long windows = 1;
        while (val.TryNext(window)) windows++;
        Assert.Equal((92_134 + 23) / 64, windows);
    }
}
