using static TorchSharp.torch;

namespace DistTrain.Model.Layers;

/// <summary>
/// A block's output A + B with the add not yet done (B null: A itself): the norm that reads it next adds
/// the two in its own pass (<see cref="RmsNorm.Forward(Residual)"/>, <see cref="Kernels.IKernels.AddRmsNorm"/>),
/// so the residual stream is written once and read once less per block.
/// </summary>
public readonly record struct Residual(Tensor A, Tensor? B = null)
{
    /// <summary>A + B as one tensor (a plain add; A itself when B is null).</summary>
    public Tensor Sum() => B is null ? A : A.Plus(B);

    /// <summary>Both addends moved to the caller's caller's dispose scope.</summary>
    public Residual MoveToOuterDisposeScope() => new(A.MoveToOuterDisposeScope(), B?.MoveToOuterDisposeScope());
}
