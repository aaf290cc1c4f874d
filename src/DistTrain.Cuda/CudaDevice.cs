using System.Collections.Concurrent;
using DistTrain.Cuda.Native;
using static DistTrain.Cuda.Native.CudaDriver;

namespace DistTrain.Cuda;

/// <summary>
/// One CUDA device as libtorch sees it: its primary context (retained, never created or destroyed
/// here, so kernels and libtorch share memory and the default stream), compute capability and SM
/// count. Any thread that launches calls <see cref="MakeCurrent"/> first: autograd's backward runs
/// on the engine's device thread, which need not have our context current.
/// </summary>
public sealed class CudaDevice
{
    static readonly ConcurrentDictionary<int, Lazy<CudaDevice>> Devices = new();

    readonly nint _context;

    CudaDevice(int index)
    {
        CudaLibraries.Load();
        Check(cuInit(0), "cuInit");
        Check(cuDeviceGetCount(out int count), "cuDeviceGetCount");
        if (index < 0 || index >= count)
            throw new CudaUnavailableException($"CUDA device {index} does not exist: the driver sees {count} device(s) (CUDA_VISIBLE_DEVICES applies); use train.device=cuda:0..{count - 1}");
        Check(cuDeviceGet(out int device, index), "cuDeviceGet");
        Check(cuDeviceGetAttribute(out int major, AttrComputeCapabilityMajor, device), "cuDeviceGetAttribute");
        Check(cuDeviceGetAttribute(out int minor, AttrComputeCapabilityMinor, device), "cuDeviceGetAttribute");
        Check(cuDeviceGetAttribute(out int sms, AttrMultiprocessorCount, device), "cuDeviceGetAttribute");
        Check(cuDevicePrimaryCtxRetain(out _context, device), "cuDevicePrimaryCtxRetain");
        Check(cuDriverGetVersion(out int driverVersion), "cuDriverGetVersion");
        (Index, Major, Minor, Multiprocessors, DriverVersion) = (index, major, minor, sms, driverVersion);
        Name = ReadName(device);
    }

    /// <summary>The device with this ordinal (as in cuda:N); loads the libraries on first use. Throws <see cref="CudaUnavailableException"/>.</summary>
    public static CudaDevice Get(int index)
    {
        var lazy = Devices.GetOrAdd(index, i => new Lazy<CudaDevice>(() => new CudaDevice(i)));
        try
        {
            return lazy.Value;
        }
        catch
        {
            Devices.TryRemove(index, out _);   // a later call may succeed (a library path fixed meanwhile)
            throw;
        }
    }

    public int Index { get; }
    public int Major { get; }
    public int Minor { get; }
    public int Multiprocessors { get; }
    public int DriverVersion { get; }
    public string Name { get; }

    /// <summary>The NVRTC target: sm_90 for an H100/H200.</summary>
    public string Arch => $"sm_{Major}{Minor}";

    /// <summary>Makes the primary context current on this thread (a no-op when it already is).</summary>
    public void MakeCurrent()
    {
        Check(cuCtxGetCurrent(out var current), "cuCtxGetCurrent");
        if (current != _context)
            Check(cuCtxSetCurrent(_context), "cuCtxSetCurrent");
    }

    unsafe string ReadName(int device)
    {
        byte* name = stackalloc byte[256];
        return cuDeviceGetName(name, 256, device) == Success ? Text(name) : $"CUDA device {Index}";
    }

    static void Check(int result, string call)
    {
        if (result == Success) return;
        // 100 = CUDA_ERROR_NO_DEVICE, 999 = UNKNOWN, 3 = NOT_INITIALIZED, 35 = INSUFFICIENT_DRIVER
        throw new CudaUnavailableException($"{call} failed: {Describe(result)}");
    }
}
