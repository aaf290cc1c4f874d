namespace DistTrain.Cuda;

/// <summary>
/// A CUDA driver call failed. <see cref="Code"/> is the CUresult; <see cref="ContextLost"/> says the
/// error is sticky (an illegal address, a failed launch): the CUDA context of this process is
/// unusable from now on and only a new process can continue.
/// </summary>
public sealed class CudaException : Exception
{
    public CudaException(int code, string message) : base(message) => Code = code;

    public int Code { get; }

    public bool ContextLost => IsSticky(Code);

    /// <summary>CUresults after which the context is poisoned (cuda.h: 700, 702, 710, 714-719).</summary>
    public static bool IsSticky(int code) => code is 700 or 702 or 710 or (>= 714 and <= 719);

    /// <summary>
    /// Whether <paramref name="e"/> leaves this process's CUDA context unusable: a sticky error of our own kernels, or one
    /// from a libtorch op, whose message carries the CUDA runtime's text. Only a new process can go on.
    /// </summary>
    public static bool PoisonsProcess(Exception e) => e is CudaException { ContextLost: true }
        || StickyTexts.Any(t => e.Message.Contains(t, StringComparison.OrdinalIgnoreCase));

    // cudaGetErrorString of the sticky errors above, as libtorch's "CUDA error: ..." messages carry them
    static readonly string[] StickyTexts =
        ["an illegal memory access was encountered", "an illegal instruction was encountered", "unspecified launch failure", "misaligned address", "device-side assert triggered"];
}
