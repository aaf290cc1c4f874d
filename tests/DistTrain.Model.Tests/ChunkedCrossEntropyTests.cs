using DistTrain.Model;
using DistTrain.Model.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Model.Tests;

/// <summary>
/// The fused, chunked output projection + loss gives the loss and gradients of the plain path,
/// cross_entropy(logits.float()), for every architecture, with a ragged last chunk and with one chunk.
/// </summary>
public class ChunkedCrossEntropyTests
{
    const int Batch = 2, SeqLen = 15;   // N = 30 tokens

    public static TheoryData<Architecture, string, int> Cases()
    {
        var data = new TheoryData<Architecture, string, int>();
        foreach (var arch in new[] { Architecture.MUDDFormer, Architecture.DenseFormer, Architecture.TransformerPP })
            foreach (var dtype in new[] { "fp32", "bf16" })
                foreach (int chunk in new[] { 7, 64 })   // 7 leaves a last chunk of 2 rows; 64 >= N is one chunk
                    data.Add(arch, dtype, chunk);
        return data;
    }

    // Measured on x86-64 (libtorch 2.10 CPU): fp32 loss within 2.4e-7 (one ulp), gradients within
    // 1.4e-6 of each tensor's largest. bf16: loss within 2.4e-7; with one chunk every gradient is
    // bit-identical; with several, all but output.weight are, and it is within 3.4e-3 / 4.2e-3 / 6.3e-3
    // (MUDDFormer / DenseFormer / Transformer++, 5 chunks: the running sum is rounded to bf16 once a chunk).
    static (double Loss, double Grad) Tolerance(ScalarType dtype) => dtype == ScalarType.Float32 ? (1e-6, 1e-5) : (1e-6, 8e-3);

    [Theory]
    [MemberData(nameof(Cases))]
    public void LossAndGradientsEqualThoseOfTheFullLogits(Architecture arch, string precision, int chunk)
    {
        var dtype = Precision.Parse(precision);
        var config = TinyModels.Config(arch, layers: 3);
        using var model = TinyModels.Build(config, seed: 5, dtype: dtype);
        var tokens = TinyModels.Tokens(config, Batch, SeqLen);
        var targets = TinyModels.Tokens(config, Batch, SeqLen, seed: 6);

        var (plainLoss, plain) = Backward(model, () => nn.functional.cross_entropy(Precision.Upcast(model.forward(tokens)).view(-1, config.VocabSize), targets.view(-1)));
        var (loss, chunked) = Backward(model, () => model.Loss(tokens, targets, chunk));

        var (lossTol, gradTol) = Tolerance(dtype);
        Assert.True(Math.Abs(plainLoss - loss) <= lossTol, $"loss {loss} vs {plainLoss} with the full logits");
        foreach (var name in new[] { "output.weight", "norm.weight", "tok_embeddings.weight", "layers.0.feed_forward.w1.weight" })
            Assert.True(plain[name].abs().sum().item<float>() > 0, $"{name}: no gradient at all; the test would prove nothing");
        AssertClose(plain, chunked, gradTol);
        foreach (var g in plain.Values.Concat(chunked.Values)) g.Dispose();
    }

    [Fact]
    public void AnOutputWeightWithoutGradLeavesTheOtherGradientsAsTheyWere()
    {
        var config = TinyModels.Config(Architecture.MUDDFormer);
        using var model = TinyModels.Build(config, seed: 5);
        var tokens = TinyModels.Tokens(config, Batch, SeqLen);
        var targets = TinyModels.Tokens(config, Batch, SeqLen, seed: 6);
        var weight = model.named_parameters().Single(p => p.name == "output.weight").parameter;
        weight.requires_grad_(false);

        var (plainLoss, plain) = Backward(model, () => nn.functional.cross_entropy(model.forward(tokens).view(-1, config.VocabSize), targets.view(-1)));
        var (loss, chunked) = Backward(model, () => model.Loss(tokens, targets, 7));

        Assert.True(Math.Abs(plainLoss - loss) <= 1e-6, $"loss {loss} vs {plainLoss}");
        Assert.DoesNotContain("output.weight", chunked.Keys);
        AssertClose(plain, chunked, 1e-5);
    }

    [Fact]
    public void AHiddenWithoutGradStillGivesTheWeightItsGradient()
    {
        manual_seed(3);
        var hidden = randn(30, 16);
        var weight = randn(40, 16).requires_grad_();
        var targets = randint(40, [30], dtype: ScalarType.Int64);

        nn.functional.cross_entropy(hidden.mm(weight.t()), targets).backward();
        var expected = weight.grad!.clone();
        weight.grad!.zero_();
        ChunkedCrossEntropy.Loss(hidden, weight, targets, 4).backward();

        Assert.False(hidden.requires_grad);
        Assert.True((expected - weight.grad!).abs().max().item<float>() <= 1e-6 * expected.abs().max().item<float>());
    }

    /// <summary>
    /// A scaled loss (the trainer divides by the accumulation steps) scales both gradients, and the weight's
    /// gradient is added into a .grad that already holds one (the flat buffer after an earlier micro-batch).
    /// </summary>
    [Theory]
    [InlineData(ScalarType.Float64, 1e-12)]
    [InlineData(ScalarType.Float32, 1e-6)]
    public void AScaledLossAddsItsScaledGradientIntoTheWeightsGrad(ScalarType dtype, double tolerance)
    {
        manual_seed(4);
        var hidden = randn(30, 16, dtype: dtype).requires_grad_();
        var weight = randn(40, 16, dtype: dtype).requires_grad_();
        var targets = randint(40, [30], dtype: ScalarType.Int64);
        nn.functional.cross_entropy(hidden.mm(weight.t()), targets).backward();
        var (dh, dw) = (hidden.grad!.clone(), weight.grad!.clone());
        hidden.grad!.zero_();
        var earlier = randn(40, 16, dtype: dtype);
        weight.grad!.copy_(earlier);

        (ChunkedCrossEntropy.Loss(hidden, weight, targets, 7) * 0.25).backward();   // 5 chunks, the last of 2 rows

        double Err(Tensor a, Tensor b) => (a - b).abs().max().to(ScalarType.Float64).item<double>() / b.abs().max().to(ScalarType.Float64).item<double>();
        Assert.True(Err(hidden.grad!, dh * 0.25) <= tolerance, $"hidden: {Err(hidden.grad!, dh * 0.25):E2}");
        Assert.True(Err(weight.grad!, earlier + dw * 0.25) <= tolerance, $"weight: {Err(weight.grad!, earlier + dw * 0.25):E2}");
    }

    [Fact]
    public void WithoutGradModeNoGraphIsBuilt()
    {
        var config = TinyModels.Config(Architecture.DenseFormer);
        using var model = TinyModels.Build(config, seed: 5);
        var tokens = TinyModels.Tokens(config, Batch, SeqLen);
        var targets = TinyModels.Tokens(config, Batch, SeqLen, seed: 6);
        using var noGrad = no_grad();
        using var loss = model.Loss(tokens, targets, 7);
        using var full = nn.functional.cross_entropy(model.forward(tokens).view(-1, config.VocabSize), targets.view(-1));
        Assert.False(loss.requires_grad);
        Assert.Equal(ScalarType.Float32, loss.dtype);
        Assert.Equal(full.item<float>(), loss.item<float>(), 1e-6f);
    }

    [Fact]
    public void RepeatedStepsHoldNoMoreTensorsThanTheFirst()
    {
        var config = TinyModels.Config(Architecture.MUDDFormer);
        using var model = TinyModels.Build(config, seed: 5);
        model.Checkpointing = new ActivationCheckpointing(CheckpointKind.Mudd, 1);
        var tokens = TinyModels.Tokens(config, Batch, SeqLen);
        var targets = TinyModels.Tokens(config, Batch, SeqLen, seed: 6);
        long afterWarmup = 0;
        for (int step = 0; step < 50; step++)
        {
            using (var scope = NewDisposeScope())
            {
                model.zero_grad();
                model.Loss(tokens, targets, 7).backward();
            }
            if (step == 4) afterWarmup = Tensor.TotalCount;
        }
        // live tensor handles (process-wide): parameters, their gradients and the last returned gradients
        Assert.True(Tensor.TotalCount <= afterWarmup, $"{Tensor.TotalCount} live tensors after 50 steps, {afterWarmup} after 5");
    }

    static (double Loss, Dictionary<string, Tensor> Grads) Backward(LanguageModel model, Func<Tensor> loss)
    {
        model.zero_grad();
        using var scope = NewDisposeScope();
        var value = loss();
        value.backward();
        var grads = model.named_parameters().Where(p => p.parameter.requires_grad)
            .ToDictionary(p => p.name, p => p.parameter.grad!.to(ScalarType.Float32).clone().DetachFromDisposeScope());
        return (value.item<float>(), grads);
    }

    static void AssertClose(Dictionary<string, Tensor> expected, Dictionary<string, Tensor> actual, double tolerance)
    {
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (name, g) in expected)
        {
            double scale = Math.Max(g.abs().max().item<float>(), 1e-6);
            double diff = (g - actual[name]).abs().max().item<float>();
            Assert.True(diff <= tolerance * scale + 1e-8, $"{name}: max |Δgrad| {diff:E2} (largest grad {scale:E2})");
        }
    }
}
