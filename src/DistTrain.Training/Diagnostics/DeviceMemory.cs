using System.Runtime.InteropServices;
using System.Text;

namespace DistTrain.Training.Diagnostics;

/// <summary>
/// Device memory in use as the driver reports it (NVML, libnvidia-ml.so.1 from the driver), since
/// TorchSharp exposes no memory statistics. This counts the CUDA context and what libtorch's caching
/// allocator has reserved; the allocator never hands memory back during a run, so the value after a
/// step is also the peak reserved so far. Written by hand: NVML has no .NET package here, and three
/// calls are all that is needed.
/// </summary>
public sealed class DeviceMemory
{
    [StructLayout(LayoutKind.Sequential)]
    struct MemoryInfo { public ulong Total, Free, Used; }

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] delegate int InitFn();
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] delegate int HandleFn(uint index, out nint device);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] delegate int MemoryFn(nint device, out MemoryInfo info);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] delegate int NameFn(nint device, byte[] name, uint length);

    readonly nint _device;
    readonly MemoryFn _memory;

    DeviceMemory(nint device, MemoryFn memory, string name) => (_device, _memory, Name) = (device, memory, name);

    /// <summary>The GPU's product name, e.g. "NVIDIA H100 80GB HBM3".</summary>
    public string Name { get; }

    /// <summary>NVML for CUDA device <paramref name="index"/>, or null where there is no NVIDIA driver (a CPU host).</summary>
    public static DeviceMemory? Open(int index)
    {
        if (!NativeLibrary.TryLoad("libnvidia-ml.so.1", out var lib)) return null;
        T Fn<T>(string name) => Marshal.GetDelegateForFunctionPointer<T>(NativeLibrary.GetExport(lib, name));
        if (Fn<InitFn>("nvmlInit_v2")() != 0) return null;
        if (Fn<HandleFn>("nvmlDeviceGetHandleByIndex_v2")((uint)index, out var device) != 0) return null;
        var buffer = new byte[96];
        Fn<NameFn>("nvmlDeviceGetName")(device, buffer, (uint)buffer.Length);
        return new DeviceMemory(device, Fn<MemoryFn>("nvmlDeviceGetMemoryInfo"), Encoding.ASCII.GetString(buffer).TrimEnd('\0'));
    }

    /// <summary>Bytes in use on the device now (every process's, this one's context included).</summary>
    public long UsedBytes => _memory(_device, out var info) == 0 ? (long)info.Used : -1;

    public long TotalBytes => _memory(_device, out var info) == 0 ? (long)info.Total : -1;
}
