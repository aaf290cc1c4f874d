using DistTrain.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Model.Tests;

/// <summary>Every activation-checkpointing policy gives the gradients of the plain backward (fp32, a tiny model of each architecture).</summary>
public class ActivationCheckpointingTests
{
    public static TheoryData<Architecture, CheckpointKind, int> Cases()
    {
        var data = new TheoryData<Architecture, CheckpointKind, int>();
        foreach (var arch in new[] { Architecture.MUDDFormer, Architecture.DenseFormer, Architecture.TransformerPP })
            foreach (var (kind, every) in new[] { (CheckpointKind.Block, 1), (CheckpointKind.Mudd, 1), (CheckpointKind.Mudd, 2), (CheckpointKind.Block, 3) })
                data.Add(arch, kind, every);
        return data;
    }

    [Theory]
    [InlineData(CheckpointKind.Mudd, 1, new[] { 0, 1, 2 })]
    [InlineData(CheckpointKind.Block, 2, new[] { 0, 2 })]
    [InlineData(CheckpointKind.Mudd, 3, new[] { 0 })]   // layer 3 is the last
    [InlineData(CheckpointKind.None, 1, new int[0])]
    public void EveryKthLayerButTheLastIsRecomputed(CheckpointKind kind, int every, int[] covered)
    {
        var policy = new ActivationCheckpointing(kind, every);
        Assert.Equal(covered, Enumerable.Range(0, 4).Where(i => policy.Covers(i, 4)).ToArray());
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void GradientsEqualThoseWithoutCheckpointing(Architecture arch, CheckpointKind kind, int every)
    {
        var config = TinyModels.Config(arch, layers: 4) with { DwaDilation = 1, DwaPeriod = arch == Architecture.DenseFormer ? 2 : 1 };
        using var model = TinyModels.Build(config, seed: 3);
        var tokens = TinyModels.Tokens(config, 2, 16);
        var targets = TinyModels.Tokens(config, 2, 16, seed: 4);

        (float Loss, Dictionary<string, Tensor> Grads) Backward(ActivationCheckpointing policy)
        {
            model.Checkpointing = policy;
            model.zero_grad();
            using var scope = NewDisposeScope();
            var loss = nn.functional.cross_entropy(model.forward(tokens).view(-1, config.VocabSize), targets.view(-1));
            loss.backward();
            var grads = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.clone().DetachFromDisposeScope());
            return (loss.item<float>(), grads);
        }

        var (plainLoss, plain) = Backward(ActivationCheckpointing.Off);
        var (loss, checkpointed) = Backward(new ActivationCheckpointing(kind, every));

        Assert.Equal(plainLoss, loss);   // the forward is the same computation
        Assert.Equal(plain.Keys, checkpointed.Keys);
        foreach (var (name, g) in plain)
        {
            double scale = Math.Max(g.abs().max().item<float>(), 1e-6);
            double diff = (g - checkpointed[name]).abs().max().item<float>();
            Assert.True(diff <= 1e-5 * scale + 1e-7, $"{name}: max |Δgrad| {diff:E2} (largest grad {scale:E2})");
            Assert.True(g.abs().sum().item<float>() > 0 || name.StartsWith("dwa"), $"{name}: no gradient at all; the test would prove nothing");
        }
        foreach (var g in plain.Values.Concat(checkpointed.Values)) g.Dispose();
    }

    /// <summary>The region runs for its value in forward and for its graph alone in backward's re-run, which must not need the value.</summary>
    [Fact]
    public void TheReRunInBackwardIsToldItsValueIsNotNeeded()
    {
        using var scope = NewDisposeScope();
        var x = randn(4, 3).requires_grad_(true);
        var asked = new List<bool>();
        Tensor Region(Tensor[] inputs, bool valueNeeded)
        {
            asked.Add(valueNeeded);
            return inputs[0].mul(2.0);
        }
        Layers.Recompute.Run(Region, x).sum().backward();
        Assert.Equal([true, false], asked);
        Assert.True(x.grad!.eq(2.0).all().item<bool>());
    }
}
