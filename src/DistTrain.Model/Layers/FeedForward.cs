using TorchSharp;
using TorchSharp.Utils;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DistTrain.Model.Layers;

/// <summary>SwiGLU: w2(silu(w1 x) * w3 x), width from <see cref="ModelConfig.FfnWidth"/>.</summary>
public sealed class FeedForward : nn.Module<Tensor, Tensor>
{
    readonly Linear w1, w2, w3;

    public FeedForward(long dim, long hidden) : base(nameof(FeedForward))
    {
        w1 = nn.Linear(dim, hidden, hasBias: false);
        w3 = nn.Linear(dim, hidden, hasBias: false);
        w2 = nn.Linear(hidden, dim, hasBias: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return w2.forward(nn.functional.silu(w1.forward(x)) * w3.forward(x)).MoveToOuterDisposeScope();
    }
}
