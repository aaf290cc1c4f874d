using static TorchSharp.torch;

namespace DistTrain.Model.Kernels;

/// <summary>
/// The memory-bound operations the model calls by name. The model does not know which
/// implementation runs: <see cref="ReferenceKernels"/> (plain TorchSharp ops; the CPU and CI path,
/// and what the GPU tests compare against) or the fused CUDA kernels of DistTrain.Cuda, chosen by
/// the trainer (train.kernels) and set from outside through <see cref="LanguageModel.Kernels"/>.
/// </summary>
public interface IKernels
{
    /// <summary>A short name for the run's opening lines: "reference" or "fused".</summary>
    string Name { get; }

    /// <summary>
    /// RMSNorm over the last dimension: x (..., D), weight (D) or null (the no-scale norm of the
    /// dynamic-dense input) -> (..., D) in x's dtype; x · rsqrt(mean(x²) + eps) in fp32, then · weight.
    /// </summary>
    Tensor RmsNorm(Tensor x, Tensor? weight, double eps);
}

/// <summary>A module that calls <see cref="IKernels"/>; <see cref="LanguageModel.Kernels"/> sets them on every such submodule.</summary>
public interface IUsesKernels
{
    IKernels Kernels { get; set; }
}
