using DistTrain.Model.Inference;
using static TorchSharp.torch;

namespace DistTrain.Model.Tests.Inference;

/// <summary>The cached forward (prompt, then chunks, then single tokens) gives the full forward's logits, for every architecture.</summary>
public class KvCacheTests
{
    public static TheoryData<Architecture> Architectures() => [Architecture.MUDDFormer, Architecture.DenseFormer, Architecture.TransformerPP];

    static ModelConfig Config(Architecture arch) =>
        TinyModels.Config(arch, layers: 4) with { DwaDilation = arch == Architecture.DenseFormer ? 2 : 1, DwaPeriod = arch == Architecture.DenseFormer ? 2 : 1 };

    [Theory]
    [MemberData(nameof(Architectures))]
    public void CachedLogitsEqualTheFullForward(Architecture arch)
    {
        var config = Config(arch);
        using var model = TinyModels.Build(config, seed: 5);
        model.eval();
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var tokens = TinyModels.Tokens(config, 2, 20);
        var full = model.forward(tokens);                                       // (2, 20, V)
        double scale = full.abs().max().item<float>();

        using var cache = new KvCache(config);
        // the prompt (is_causal), a chunk after cached positions (explicit mask), then one token at a time
        var pieces = new List<(int Start, int Length)> { (0, 7), (7, 5) };
        pieces.AddRange(Enumerable.Range(12, 8).Select(i => (i, 1)));
        foreach (var (start, length) in pieces)
        {
            Assert.Equal(start, cache.Length);
            var cached = model.forward(tokens.narrow(1, start, length), cache);
            double diff = (cached - full.narrow(1, start, length)).abs().max().item<float>();
            Assert.True(diff <= 1e-5 * scale, $"{arch} positions {start}..{start + length - 1}: max |Δlogit| {diff:E2} (largest logit {scale:E2})");
        }
        Assert.Equal(20, cache.Length);

        // without the cache the same single token sees no context: the comparison above can fail
        var alone = model.forward(tokens.narrow(1, 19, 1));
        double apart = (alone - full.narrow(1, 19, 1)).abs().max().item<float>();
        Assert.True(apart > 1e-3 * scale, $"{arch}: the last token alone gives the full forward's logits ({apart:E2}); the test would prove nothing");
    }

    [Fact]
    public void MorePositionsThanBlockSizeAreRefused()
    {
        var config = Config(Architecture.MUDDFormer);
        using var model = TinyModels.Build(config);
        using var noGrad = no_grad();
        using var cache = new KvCache(config);
        using var scope = NewDisposeScope();
        model.forward(TinyModels.Tokens(config, 1, config.BlockSize - 1), cache);
        var e = Assert.Throws<ArgumentException>(() => model.forward(TinyModels.Tokens(config, 1, 2), cache));
        Assert.Contains($"exceed block_size {config.BlockSize}", e.Message);
        Assert.Equal(config.BlockSize - 1, cache.Length);
    }

    [Fact]
    public void ACacheSizedForAGenerationRefusesMore()
    {
        var config = Config(Architecture.DenseFormer);
        using var model = TinyModels.Build(config);
        using var noGrad = no_grad();
        using var cache = new KvCache(config, capacity: 4);
        using var scope = NewDisposeScope();
        model.forward(TinyModels.Tokens(config, 1, 3), cache);
        var e = Assert.Throws<ArgumentException>(() => model.forward(TinyModels.Tokens(config, 1, 2), cache));
        Assert.Equal("3 cached + 2 new positions exceed the cache's 4", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new KvCache(config, config.BlockSize + 1));
    }
}
