using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace DistTrain.Model;

/// <summary>
/// The address of a tensor's first element (storage offset included), for code that hands tensor memory
/// to something that is not libtorch: a file write, NCCL, a kernel. Hand-written because TorchSharp only
/// exposes it as a Span (int-sized: no buffer over 2 GB) or as the storage's base address.
/// </summary>
public static unsafe class TensorMemory
{
    static readonly delegate* unmanaged<nint, nint> Data = (delegate* unmanaged<nint, nint>)NativeLibrary.GetExport(LibTorchSharp(), "THSTensor_data");

    /// <summary>The tensor must stay alive (and unmoved) while the address is used.</summary>
    public static nint Address(Tensor tensor)
    {
        nint address = Data(tensor.Handle);
        GC.KeepAlive(tensor);
        if (address == 0 && tensor.numel() > 0)
            throw new InvalidOperationException($"TorchSharp returned no data pointer for a {tensor.dtype} tensor of shape [{string.Join(", ", tensor.shape)}] on {tensor.device}");
        return address;
    }

    static nint LibTorchSharp()
    {
        InitializeDeviceType(TorchSharp.DeviceType.CPU);   // TorchSharp loads its native library on first use
        return NativeLibrary.TryLoad("LibTorchSharp", typeof(TorchSharp.torch).Assembly, null, out var handle) ? handle
            : throw new DllNotFoundException("libLibTorchSharp.so is not loaded: TorchSharp's native library could not be found");
    }
}
