using DistTrain.Model.Kernels;
using DistTrain.Model.Layers;
using static TorchSharp.torch;

namespace DistTrain.Model.Tests;

/// <summary>
/// The reference <see cref="IKernels.CrossEntropyRows"/> (what the fused kernel is checked against on
/// the GPU): each row's loss is cross_entropy's, and the logits become the gradient of the mean loss.
/// </summary>
public class CrossEntropyRowsTests
{
    [Theory]
    [InlineData("fp32", 1, 1)]
    [InlineData("fp32", 7, 13)]
    [InlineData("fp32", 30, 260)]
    [InlineData("bf16", 7, 13)]
    [InlineData("bf16", 30, 260)]
    public void LossesAndGradientAreThoseOfCrossEntropy(string precision, int rows, int vocab)
    {
        using var scope = NewDisposeScope();
        var dtype = Precision.Parse(precision);
        manual_seed(rows * 1000 + vocab);
        var logits = randn(rows, vocab).Times(3).to(dtype);
        var targets = randint(0, vocab, [rows], dtype: ScalarType.Int64);
        long meanOver = 3 * rows;   // a chunk of a batch three times its size

        var x = Precision.Upcast(logits).detach().requires_grad_(true);
        var expectedLosses = nn.functional.cross_entropy(x, targets, reduction: nn.Reduction.None);
        var expectedGrad = autograd.grad([expectedLosses.sum().div(Scalars.Of(meanOver))], [x])[0].to(dtype);

        var losses = empty(rows, ScalarType.Float32);
        var g = logits.clone();
        ReferenceKernels.Instance.CrossEntropyRows(g, targets, losses, meanOver);
        Assert.True(losses.allclose(expectedLosses.detach(), rtol: 1e-6, atol: 1e-6), $"losses {losses.max().item<float>()} differ");
        double gradTol = dtype == ScalarType.Float32 ? 1e-7 : 1e-3 / meanOver;   // bf16: within one rounding of the fp32 gradient
        Assert.True(g.to(ScalarType.Float64).sub(expectedGrad.to(ScalarType.Float64)).abs().max().item<double>() <= gradTol);
        Assert.Equal(dtype, g.dtype);

        // without meanOver only the losses are written
        var untouched = logits.clone();
        ReferenceKernels.Instance.CrossEntropyRows(untouched, targets, losses, null);
        Assert.True(untouched.eq(logits).all().item<bool>());
        Assert.True(losses.allclose(expectedLosses.detach(), rtol: 1e-6, atol: 1e-6));
    }
}
