using DistTrain.Model.Layers;
using static TorchSharp.torch;

namespace DistTrain.Model.Tests;

/// <summary>The linear node that adds its weight's gradient into the weight's .grad inside the GEMM gives nn.Linear's values.</summary>
public class ProjectionTests
{
    [Theory]
    [InlineData(ScalarType.Float64, 1e-12)]
    [InlineData(ScalarType.Float32, 1e-5)]
    public void OutputsAndGradientsAreALinearLayersAndGoIntoAnExistingGrad(ScalarType dtype, double tolerance)
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var (x, w, gy, g0) = (randn(2, 5, 8, dtype: dtype), randn(12, 8, dtype: dtype), randn(2, 5, 12, dtype: dtype), randn(12, 8, dtype: dtype));
        // withGrad: the weight holds g0 in .grad before backward (the trainer's flat buffer): the result is g0 + dw in place
        Tensor[] Run(Func<Tensor, Tensor, Tensor> op, bool withGrad)
        {
            var (xi, wi) = (x.detach().requires_grad_(true), w.detach().requires_grad_(true));
            var held = withGrad ? g0.clone() : null;
            if (held is not null) wi.grad = held;
            var y = op(xi, wi);
            y.mul(gy).sum().backward();
            return [y.detach(), xi.grad!, wi.grad!, held ?? wi.grad!];
        }
        foreach (bool withGrad in new[] { false, true })
        {
            var linear = Run((xi, wi) => nn.functional.linear(xi, wi), withGrad);
            var projection = Run(Projection.Apply, withGrad);
            string[] names = ["y", "dx", "dw"];
            for (int i = 0; i < names.Length; i++)
            {
                double err = linear[i].sub(projection[i]).abs().max().to(ScalarType.Float64).item<double>() / linear[i].abs().max().to(ScalarType.Float64).item<double>();
                Assert.True(err <= tolerance, $"{names[i]} (existing .grad: {withGrad}): relative error {err}");
            }
            if (withGrad)
            {
                Assert.True(projection[3].eq(projection[2]).all().item<bool>());   // added into the buffer that .grad held, not a new one
                Assert.True(projection[2].sub(linear[2].sub(g0)).abs().max().to(ScalarType.Float64).item<double>() > 1e-3);   // g0 is part of it
            }
        }
    }

    [Fact]
    public void AnInputWithoutGradGetsNoneAndTheWeightStillDoes()
    {
        using var scope = NewDisposeScope();
        var (x, w) = (randn(3, 4), randn(6, 4).requires_grad_(true));
        Projection.Apply(x, w).sum().backward();
        Assert.Null(x.grad);
        Assert.True(w.grad!.allclose(ones(3, 6).T.mm(x)));
    }

    [Fact]
    public void WithoutAGraphItIsAPlainProduct()
    {
        using var scope = NewDisposeScope();
        var (x, w) = (randn(3, 4), randn(6, 4).requires_grad_(true));
        using var noGrad = no_grad();
        var y = Projection.Apply(x, w);
        Assert.True(y.allclose(x.matmul(w.T)));
        Assert.False(y.requires_grad);
    }
}
