using DistTrain.Model.Inference;
using static TorchSharp.torch;

namespace DistTrain.Model.Tests.Inference;

/// <summary>Generation with the cache: greedy equals the full model's argmax step by step; a seed repeats a sample.</summary>
public class DecoderTests
{
    public static TheoryData<Architecture> Architectures() => [Architecture.MUDDFormer, Architecture.DenseFormer, Architecture.TransformerPP];

    [Theory]
    [MemberData(nameof(Architectures))]
    public void GreedyEqualsTheFullModelsArgmaxStepByStep(Architecture arch)
    {
        var config = TinyModels.Config(arch, layers: 3);
        using var model = TinyModels.Build(config, seed: 9);
        long[] prompt = [3, 17, 5, 40, 8];

        var generated = Decoder.Generate(model, prompt, maxTokens: 12, new SamplingOptions(Temperature: 0));

        var expected = new List<long>();
        using (no_grad())
            for (int step = 0; step < 12; step++)
            {
                using var scope = NewDisposeScope();
                var logits = model.forward(tensor(prompt.Concat(expected).ToArray()).unsqueeze(0));   // (1, T, V), no cache
                expected.Add(logits[0, -1].argmax().item<long>());
            }
        Assert.Equal(expected, generated);
        Assert.True(generated.Distinct().Count() > 1, $"{arch}: greedy output is one token repeated ({generated[0]}); pick another seed or prompt");
    }

    [Fact]
    public void TheSameSeedRepeatsASampleAndAnotherSeedDiffers()
    {
        var config = TinyModels.Config(Architecture.MUDDFormer);
        using var model = TinyModels.Build(config, seed: 9);
        long[] prompt = [1, 2, 3];
        var sampling = new SamplingOptions(Temperature: 1.5, TopK: 20, Seed: 42);

        var first = Decoder.Generate(model, prompt, 24, sampling);
        var again = Decoder.Generate(model, prompt, 24, sampling);
        var other = Decoder.Generate(model, prompt, 24, sampling with { Seed = 43 });

        Assert.Equal(24, first.Count);
        Assert.Equal(first, again);
        Assert.NotEqual(first, other);
    }

    [Fact]
    public void TopKOfOneIsGreedy()
    {
        var config = TinyModels.Config(Architecture.DenseFormer);
        using var model = TinyModels.Build(config, seed: 2);
        long[] prompt = [4, 4, 9];
        var greedy = Decoder.Generate(model, prompt, 10, new SamplingOptions(Temperature: 0));
        var topOne = Decoder.Generate(model, prompt, 10, new SamplingOptions(Temperature: 2, TopK: 1, Seed: 5));
        Assert.Equal(greedy, topOne);
    }

    [Fact]
    public void StopsAtTheStopTokenAndAtBlockSize()
    {
        var config = TinyModels.Config(Architecture.TransformerPP);
        using var model = TinyModels.Build(config, seed: 9);
        long[] prompt = [3, 17, 5];
        var greedy = Decoder.Generate(model, prompt, 8, new SamplingOptions(Temperature: 0));
        var stopped = Decoder.Generate(model, prompt, 8, new SamplingOptions(Temperature: 0), stopToken: greedy[2]);
        Assert.Equal(greedy.Take(greedy.ToList().IndexOf(greedy[2]) + 1), stopped);

        // block_size 32: a 30-token prompt leaves room to run 2 more positions, so 3 tokens come out
        var filled = Decoder.Generate(model, Enumerable.Range(0, 30).Select(i => (long)(i % 40)).ToArray(), 10, new SamplingOptions(Temperature: 0));
        Assert.Equal(config.BlockSize - 30 + 1, filled.Count);
    }
}
