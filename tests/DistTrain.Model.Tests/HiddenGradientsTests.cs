using DistTrain.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Model.Tests;

/// <summary>
/// The mixes' in-place gradient buffers (HiddenGradients) give the gradients of plain autograd (every
/// mix returning all its hidden gradients) under every checkpointing policy and with gradient
/// accumulation, and hold nothing after backward.
/// </summary>
public class HiddenGradientsTests
{
    /// <summary>The reference mixing without the buffers: what the model did before them.</summary>
    sealed class PlainAutograd : IKernels
    {
        public string Name => "plain";
        public Tensor RmsNorm(Tensor x, Tensor? weight, double eps) => ReferenceKernels.Instance.RmsNorm(x, weight, eps);
        public Tensor[] RmsNorms(IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> weights, double eps) => ReferenceKernels.Instance.RmsNorms(xs, weights, eps);
        public (Tensor Sum, Tensor Normed) AddRmsNorm(Tensor a, Tensor b, Tensor? weight, double eps) => ReferenceKernels.Instance.AddRmsNorm(a, b, weight, eps);
        public Tensor SwiGlu(Tensor a, Tensor b) => ReferenceKernels.Instance.SwiGlu(a, b);
        public Tensor QkNormRotary(Tensor x, Tensor? weight, double eps, Tensor cos, Tensor sin) => ReferenceKernels.Instance.QkNormRotary(x, weight, eps, cos, sin);
        public (Tensor Q, Tensor K) QkNormRotary(Tensor q, Tensor k, Tensor? qWeight, Tensor? kWeight, double eps, Tensor cos, Tensor sin) =>
            (QkNormRotary(q, qWeight, eps, cos, sin), QkNormRotary(k, kWeight, eps, cos, sin));
        public (Tensor Q, Tensor K, Tensor V) QkvRotary(IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> ws, int heads, Tensor? qWeight, Tensor? kWeight, double eps, Tensor cos, Tensor sin) =>
            ReferenceKernels.QkvRotaryOf(this, xs, ws, heads, qWeight, kWeight, eps, cos, sin);
        public Tensor[] Mix(IReadOnlyList<Tensor> hiddens, Tensor dw, Tensor? bias, HiddenGradients? gradients) => ReferenceKernels.Instance.Mix(hiddens, dw, bias, null);
        public Tensor DepthWeightedAverage(IReadOnlyList<Tensor> hiddens, Tensor weights) => ReferenceKernels.Instance.DepthWeightedAverage(hiddens, weights);
        public void CrossEntropyRows(Tensor logits, Tensor targets, Tensor losses, long? meanOver) => ReferenceKernels.Instance.CrossEntropyRows(logits, targets, losses, meanOver);
        public void ScaleGradient(Tensor y, Tensor x, Tensor scale, bool accumulate) => ReferenceKernels.Instance.ScaleGradient(y, x, scale, accumulate);
    }

    /// <summary>The reference with the buffers, remembering each pass's object.</summary>
    sealed class Buffered : IKernels
    {
        public readonly List<HiddenGradients> Seen = [];
        public string Name => "buffered";
        public Tensor RmsNorm(Tensor x, Tensor? weight, double eps) => ReferenceKernels.Instance.RmsNorm(x, weight, eps);
        public Tensor[] RmsNorms(IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> weights, double eps) => ReferenceKernels.Instance.RmsNorms(xs, weights, eps);
        public (Tensor Sum, Tensor Normed) AddRmsNorm(Tensor a, Tensor b, Tensor? weight, double eps) => ReferenceKernels.Instance.AddRmsNorm(a, b, weight, eps);
        public Tensor SwiGlu(Tensor a, Tensor b) => ReferenceKernels.Instance.SwiGlu(a, b);
        public Tensor QkNormRotary(Tensor x, Tensor? weight, double eps, Tensor cos, Tensor sin) => ReferenceKernels.Instance.QkNormRotary(x, weight, eps, cos, sin);
        public (Tensor Q, Tensor K) QkNormRotary(Tensor q, Tensor k, Tensor? qWeight, Tensor? kWeight, double eps, Tensor cos, Tensor sin) =>
            (QkNormRotary(q, qWeight, eps, cos, sin), QkNormRotary(k, kWeight, eps, cos, sin));
        public (Tensor Q, Tensor K, Tensor V) QkvRotary(IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> ws, int heads, Tensor? qWeight, Tensor? kWeight, double eps, Tensor cos, Tensor sin) =>
            ReferenceKernels.QkvRotaryOf(this, xs, ws, heads, qWeight, kWeight, eps, cos, sin);
        public Tensor[] Mix(IReadOnlyList<Tensor> hiddens, Tensor dw, Tensor? bias, HiddenGradients? gradients)
        {
            if (gradients is not null && !Seen.Contains(gradients)) Seen.Add(gradients);
            return ReferenceKernels.Instance.Mix(hiddens, dw, bias, gradients);
        }
        public Tensor DepthWeightedAverage(IReadOnlyList<Tensor> hiddens, Tensor weights) => ReferenceKernels.Instance.DepthWeightedAverage(hiddens, weights);
        public void CrossEntropyRows(Tensor logits, Tensor targets, Tensor losses, long? meanOver) => ReferenceKernels.Instance.CrossEntropyRows(logits, targets, losses, meanOver);
        public void ScaleGradient(Tensor y, Tensor x, Tensor scale, bool accumulate) => ReferenceKernels.Instance.ScaleGradient(y, x, scale, accumulate);
    }

    public static TheoryData<CheckpointKind, int, int> Cases() => new()
    {
        { CheckpointKind.None, 1, 1 }, { CheckpointKind.Block, 1, 1 }, { CheckpointKind.Mudd, 1, 1 }, { CheckpointKind.Mudd, 2, 1 },
        { CheckpointKind.Block, 3, 1 }, { CheckpointKind.None, 1, 3 }, { CheckpointKind.Mudd, 1, 2 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void GradientsEqualPlainAutograd(CheckpointKind kind, int every, int microBatches)
    {
        var config = TinyModels.Config(Architecture.MUDDFormer, layers: 4);
        using var model = TinyModels.Build(config, seed: 5);
        model.Checkpointing = new ActivationCheckpointing(kind, every);

        Dictionary<string, Tensor> Backward(IKernels kernels)
        {
            model.Kernels = kernels;
            model.zero_grad();
            for (int m = 0; m < microBatches; m++)
            {
                using var scope = NewDisposeScope();
                var tokens = TinyModels.Tokens(config, 2, 12, seed: 20 + m);
                var targets = TinyModels.Tokens(config, 2, 12, seed: 40 + m);
                nn.functional.cross_entropy(model.forward(tokens).view(-1, config.VocabSize), targets.view(-1)).backward();
            }
            return model.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.clone());
        }

        var plain = Backward(new PlainAutograd());
        var buffered = new Buffered();
        var grads = Backward(buffered);
        model.Kernels = ReferenceKernels.Instance;

        Assert.Equal(microBatches, buffered.Seen.Count);                   // a new object per forward pass
        Assert.All(buffered.Seen, g => Assert.Equal(0, g.Held));          // every buffer handed to autograd
        foreach (var (name, g) in plain)
        {
            double scale = Math.Max(g.abs().max().item<float>(), 1e-6);
            double diff = g.sub(grads[name]).abs().max().item<float>();
            // the same sums, but with mudd the recomputed region adds dynamic_dense's part after the buffer instead of before: fp32 rounding
            Assert.True(diff <= 1e-5 * scale, $"{name}: max |Δgrad| {diff:E2} (largest grad {scale:E2})");
            Assert.True(g.abs().sum().item<float>() > 0, $"{name}: no gradient at all; the test would prove nothing");
        }
        foreach (var g in plain.Values.Concat(grads.Values)) g.Dispose();
    }

    [Fact]
    public void AMixAfterTheHandOverThrowsInsteadOfLosingItsPart()
    {
        var gradients = new HiddenGradients();
        using var own = ones(2, 3);
        Assert.Null(gradients.Route(1, 3, own));                   // kept: mix over 3 hiddens, h_1's last reader is the mix over 2
        using var handed = gradients.Route(1, 2, own);             // handed over: 2 · own
        Assert.Equal(2f, handed!.max().item<float>());
        Assert.Equal(0, gradients.Held);
        Assert.Throws<InvalidOperationException>(() => gradients.Route(1, 4, own));
    }

    [Fact]
    public void OnlyTheMixOverTheFewestHiddensHandsOver()
    {
        // mixes over h_0..h_{L-1}, L = 2..5: h_0 and h_1 by L = 2, then h_j by L = j + 1
        Assert.True(HiddenGradients.HandsOver(0, 2) && HiddenGradients.HandsOver(1, 2));
        Assert.True(HiddenGradients.HandsOver(4, 5) && !HiddenGradients.HandsOver(3, 5) && !HiddenGradients.HandsOver(0, 5));
    }

    [Fact]
    public void ADeferredMixWaitsForTheNextMixDownAndNoOtherReader()
    {
        var gradients = new HiddenGradients();
        using var own = ones(2, 3);
        gradients.Defer(new DeferredMix(5, [zeros(2, 3), zeros(2, 3)], zeros(2, 2, 3, 5)));
        Assert.Equal(1, gradients.Held);
        using var second = new DeferredMix(3, [zeros(2, 3)], zeros(1, 2, 3, 3));
        Assert.Throws<InvalidOperationException>(() => gradients.Defer(second));   // one at a time
        Assert.Throws<InvalidOperationException>(() => gradients.TakeDeferred(3));   // the mix over 5 waits for the one over 4
        Assert.Throws<InvalidOperationException>(() => gradients.Route(0, 4, own));  // a reference mix would drop the deferred parts
        using (var taken = gradients.TakeDeferred(4))
            Assert.Equal(5, taken!.Count);
        Assert.Equal(0, gradients.Held);
        Assert.Null(gradients.TakeDeferred(3));
    }
}
