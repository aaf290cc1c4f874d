using DistTrain.Model;
using DistTrain.Cuda.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Cuda;

/// <summary>
/// A tensor's device address for a kernel, after the checks a raw pointer skips: CUDA on the
/// kernel's device, contiguous, the expected dtype, and 16-byte alignment where a kernel reads
/// vectors. A failure names the op, the argument and its shape: a bug in the caller, not a user error.
/// </summary>
internal static class TensorArgs
{
    public static nint Pointer(Tensor t, CudaDevice device, string op, string name, ScalarType dtype, bool aligned16 = false)
    {
        if (t.device_type != DeviceType.CUDA || t.device_index != device.Index)
            throw new ArgumentException($"{op}: {name} {Describe(t)} is on {t.device}, the kernel runs on cuda:{device.Index}");
        if (t.dtype != dtype)
            throw new ArgumentException($"{op}: {name} {Describe(t)} must be {dtype}");
        if (!t.is_contiguous())
            throw new ArgumentException($"{op}: {name} {Describe(t)} must be contiguous (strides [{string.Join(", ", t.stride())}])");
        var p = TensorMemory.Address(t);
        if (p == 0 && t.numel() > 0)
            throw new ArgumentException($"{op}: {name} {Describe(t)} has no data pointer");
        if (aligned16 && p % 16 != 0)
            throw new ArgumentException($"{op}: {name} {Describe(t)} starts at 0x{p:x}, not 16-byte aligned (a view at an odd offset?)");
        return p;
    }

    /// <summary>Whether the tensor's data starts on 16 bytes (fresh allocations do; a view at an offset may not).</summary>
    public static bool Aligned16(Tensor t) => TensorMemory.Address(t) % 16 == 0;

    public static string Describe(Tensor t) => $"[{string.Join(", ", t.shape)}] {t.dtype}";
}
