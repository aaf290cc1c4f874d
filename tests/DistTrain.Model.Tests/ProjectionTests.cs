using DistTrain.Model.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Model.Tests;

/// <summary>
/// <see cref="Projection"/> is nn.Linear without bias: the same initial draw, output and gradients;
/// its weight gradient lands in an existing .grad (accumulated, as autograd would) or, without one,
/// goes to autograd as usual.
/// </summary>
public class ProjectionTests
{
    [Fact]
    public void DrawsTheSameInitialWeightsAsNnLinear()
    {
        manual_seed(11);
        using var linear = nn.Linear(6, 5, hasBias: false);
        manual_seed(11);
        using var projection = new Projection(6, 5);
        Assert.Equal(0, (linear.weight! - projection.weight).abs().max().item<float>());
    }

    [Theory]
    [InlineData(false)]   // no .grad yet: dW goes to autograd, which creates .grad
    [InlineData(true)]    // .grad preset (the trainer's flat buffer view): dW is added into it in place
    public void GradientsEqualNnLinearsOverTwoAccumulatedBackwards(bool preset)
    {
        manual_seed(3);
        using var linear = nn.Linear(6, 5, hasBias: false);
        using var projection = new Projection(6, 5);
        using (no_grad()) projection.weight.copy_(linear.weight!);
        using var buffer = zeros(30);
        if (preset) projection.weight.grad = buffer.view(5, 6);
        var x = randn(2, 3, 6).requires_grad_();
        var xRef = x.detach().clone().requires_grad_();
        for (int micro = 0; micro < 2; micro++)
        {
            var dy = randn(2, 3, 5);
            projection.forward(x).backward([dy]);
            linear.forward(xRef).backward([dy]);
        }
        Assert.True(linear.weight!.grad!.abs().sum().item<float>() > 0);
        Assert.True((projection.weight.grad! - linear.weight.grad!).abs().max().item<float>() < 1e-6, "weight gradient");
        Assert.True((x.grad! - xRef.grad!).abs().max().item<float>() < 1e-6, "input gradient");
        if (preset) Assert.True((buffer.view(5, 6) - linear.weight.grad!).abs().max().item<float>() < 1e-6, "the preset buffer holds the gradient");
    }

    [Fact]
    public void ForwardAndBackwardPrintNothing()
    {
        // TorchSharp prints a warning to stdout for every tensor put into save_data: thousands of lines per step
        using var projection = new Projection(4, 3);
        var console = Console.Out;
        var captured = new StringWriter();
        Console.SetOut(captured);
        try
        {
            projection.forward(randn(5, 4).requires_grad_()).sum().backward();
        }
        finally
        {
            Console.SetOut(console);
        }
        Assert.NotNull(projection.weight.grad);
        Assert.Equal("", captured.ToString());
    }

    [Fact]
    public void WithoutGradModeItIsAPlainLinear()
    {
        using var projection = new Projection(4, 3);
        var x = randn(5, 4);
        using var noGrad = no_grad();
        var y = projection.forward(x);
        Assert.False(y.requires_grad);
        Assert.True((y - x.mm(projection.weight.t())).abs().max().item<float>() < 1e-6);
    }
}
