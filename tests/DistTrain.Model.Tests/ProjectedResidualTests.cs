using DistTrain.Model.Layers;
using static TorchSharp.torch;

namespace DistTrain.Model.Tests;

/// <summary>
/// The block output h + s·wᵀ as one node gives a linear layer plus an add, and its graph-only form (a recomputed
/// region's re-run: the output left unwritten) gives the same gradients.
/// </summary>
public class ProjectedResidualTests
{
    [Theory]
    [InlineData(ScalarType.Float64, 1e-12)]
    [InlineData(ScalarType.Float32, 1e-5)]
    public void OutputAndGradientsAreALinearLayerPlusTheResidual(ScalarType dtype, double tolerance)
    {
        using var scope = NewDisposeScope();
        manual_seed(7);
        var (h, s, w, gy, g0) = (randn(2, 5, 8, dtype: dtype), randn(2, 5, 12, dtype: dtype), randn(8, 12, dtype: dtype), randn(2, 5, 8, dtype: dtype), randn(8, 12, dtype: dtype));
        // withGrad: the weight holds g0 in .grad before backward (the trainer's flat buffer): the result is g0 + dw
        Tensor[] Run(Func<Tensor, Tensor, Tensor, Tensor> op, bool withGrad)
        {
            var (hi, si, wi) = (h.detach().requires_grad_(true), s.detach().requires_grad_(true), w.detach().requires_grad_(true));
            if (withGrad) wi.grad = g0.clone();
            var y = op(hi, si, wi);
            y.backward([gy]);
            return [y.detach(), hi.grad!, si.grad!, wi.grad!];
        }
        foreach (bool withGrad in new[] { false, true })
        {
            var plain = Run((hi, si, wi) => hi + nn.functional.linear(si, wi), withGrad);
            var fused = Run((hi, si, wi) => ProjectedResidual.Apply(hi, si, wi), withGrad);
            var graphOnly = Run((hi, si, wi) => ProjectedResidual.Apply(hi, si, wi, valueNeeded: false), withGrad);
            string[] names = ["y", "dh", "ds", "dw"];
            for (int i = 0; i < names.Length; i++)
            {
                Assert.True(Err(fused[i], plain[i]) <= tolerance, $"{names[i]} (existing .grad: {withGrad}): relative error {Err(fused[i], plain[i])}");
                if (i > 0) Assert.True(graphOnly[i].eq(fused[i]).all().item<bool>(), $"{names[i]}: the graph-only form differs");
            }
        }
    }

    [Fact]
    public void InputsWithoutGradGetNoneAndTheWeightStillDoes()
    {
        using var scope = NewDisposeScope();
        var (h, s, w) = (randn(3, 6), randn(3, 4), randn(6, 4).requires_grad_(true));
        ProjectedResidual.Apply(h, s, w).sum().backward();
        Assert.Null(h.grad);
        Assert.Null(s.grad);
        Assert.True(w.grad!.allclose(ones(3, 6).T.mm(s)));
    }

    [Fact]
    public void WithoutAGraphItIsComputedEvenWhenNotAskedFor()
    {
        using var scope = NewDisposeScope();
        var (h, s, w) = (randn(3, 6), randn(3, 4), randn(6, 4).requires_grad_(true));
        using var noGrad = no_grad();
        var y = ProjectedResidual.Apply(h, s, w, valueNeeded: false);
        Assert.False(y.requires_grad);
        Assert.True(y.allclose(h + s.mm(w.T), rtol: 1e-6, atol: 1e-6));
    }

    static double Err(Tensor a, Tensor b) =>
        a.sub(b).abs().max().to(ScalarType.Float64).item<double>() / b.abs().max().to(ScalarType.Float64).item<double>();
}
