using DistTrain.Model.Layers;
using static TorchSharp.torch;

namespace DistTrain.Model.Tests;

/// <summary>The FFN's input projections as one node give the two linear layers' outputs and gradients.</summary>
public class GateProjectionsTests
{
    [Theory]
    [InlineData(ScalarType.Float64, 1e-12)]
    [InlineData(ScalarType.Float32, 1e-5)]
    public void OutputsAndGradientsAreThoseOfTwoLinearLayers(ScalarType dtype, double tolerance)
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var (x, w1, w3) = (randn(2, 5, 8, dtype: dtype), randn(12, 8, dtype: dtype), randn(12, 8, dtype: dtype));
        var (ga, gb) = (randn(2, 5, 12, dtype: dtype), randn(2, 5, 12, dtype: dtype));
        var (g1, g3) = (randn(12, 8, dtype: dtype), randn(12, 8, dtype: dtype));
        Tensor[] Run(Func<Tensor, Tensor, Tensor, (Tensor A, Tensor B)> op, bool withGrad)
        {
            var (xi, w1i, w3i) = (x.detach().requires_grad_(true), w1.detach().requires_grad_(true), w3.detach().requires_grad_(true));
            if (withGrad) (w1i.grad, w3i.grad) = (g1.clone(), g3.clone());   // the trainer's flat buffer: added into
            var (a, b) = op(xi, w1i, w3i);
            a.mul(ga).sum().Plus(b.mul(gb).sum()).backward();
            return [a.detach(), b.detach(), xi.grad!, w1i.grad!, w3i.grad!];
        }
        string[] names = ["a", "b", "dx", "dw1", "dw3"];
        Tensor[] together = [];
        foreach (bool withGrad in new[] { false, true })
        {
            var separate = Run((xi, w1i, w3i) => (nn.functional.linear(xi, w1i), nn.functional.linear(xi, w3i)), withGrad);
            together = Run(GateProjections.Apply, withGrad);
            for (int i = 0; i < names.Length; i++)
            {
                double err = separate[i].sub(together[i]).abs().max().to(ScalarType.Float64).item<double>() / separate[i].abs().max().to(ScalarType.Float64).item<double>();
                Assert.True(err <= tolerance, $"{names[i]} (existing .grad: {withGrad}): relative error {err}");
            }
        }
        // x's gradient really is the sum of both projections' parts (not just one of them)
        var onlyA = w1.T.matmul(ga.unsqueeze(-1)).squeeze(-1);
        Assert.True(together[2].sub(onlyA).abs().max().to(ScalarType.Float64).item<double>() > 1e-3);
    }

    [Fact]
    public void WithoutAGraphItIsTwoPlainProducts()
    {
        using var scope = NewDisposeScope();
        var (x, w1, w3) = (randn(3, 4), randn(6, 4), randn(6, 4));
        using var noGrad = no_grad();
        var (a, b) = GateProjections.Apply(x, w1, w3);
        Assert.True(a.allclose(x.matmul(w1.T)) && b.allclose(x.matmul(w3.T)));
        Assert.False(a.requires_grad);
    }
}
