using DistTrain.Model.Kernels;
using TorchSharp;
using TorchSharp.Utils;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DistTrain.Model.Layers;

/// <summary>SwiGLU: w2(silu(w1 x) * w3 x), width from <see cref="ModelConfig.FfnWidth"/>.</summary>
/// <remarks>
/// w1 and w3 stay two GEMMs: one GEMM on cat(w1, w3) would need the weights concatenated every step
/// (a copy of 2·H·D per layer, again under activation checkpointing) or parameters that are views of
/// one buffer (export and the flat optimizer layout own the names w1/w3). They are one autograd node
/// (<see cref="GateProjections"/>), whose backward sums x's two gradients inside the second GEMM; the gate is one kernel.
/// </remarks>
public sealed class FeedForward : nn.Module<Tensor, Tensor>, IUsesKernels
{
    readonly Linear w1, w2, w3;

    public FeedForward(long dim, long hidden) : base(nameof(FeedForward))
    {
        w1 = nn.Linear(dim, hidden, hasBias: false);
        w3 = nn.Linear(dim, hidden, hasBias: false);
        w2 = nn.Linear(hidden, dim, hasBias: false);
        RegisterComponents();
    }

    public IKernels Kernels { get; set; } = ReferenceKernels.Instance;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return Projection.Apply(Gate(x), w2.weight!).MoveToOuterDisposeScope();
    }

    /// <summary>residual + forward(x) with the add inside w2's GEMM (<see cref="ProjectedResidual"/>; valueNeeded false: only the graph).</summary>
    public Tensor AddForward(Tensor residual, Tensor x, bool valueNeeded = true)
    {
        using var scope = NewDisposeScope();
        return ProjectedResidual.Apply(residual, Gate(x), w2.weight!, valueNeeded).MoveToOuterDisposeScope();
    }

    /// <summary>silu(w1 x) · w3 x (..., H): w2's input.</summary>
    Tensor Gate(Tensor x)
    {
        var (a, b) = GateProjections.Apply(x, w1.weight, w3.weight);
        return Kernels.SwiGlu(a, b);
    }
}
