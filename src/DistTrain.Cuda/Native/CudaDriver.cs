using System.Runtime.InteropServices;

namespace DistTrain.Cuda.Native;

// Hand-written because .NET has no CUDA driver binding and TorchSharp exposes none of it (ManagedCuda
// is not served; ILGPU makes its own context). Declarations follow cuda.h (CUDA 12/13); the names
// are the unversioned ones cuda.h does not remap to _v2. CUresult is an int; handles are pointers.
internal static unsafe partial class CudaDriver
{
    internal const string Library = "cuda";

    internal const int Success = 0;

    /// <summary>CUdevice_attribute values used here.</summary>
    internal const int AttrMultiprocessorCount = 16;
    internal const int AttrComputeCapabilityMajor = 75;
    internal const int AttrComputeCapabilityMinor = 76;

    [LibraryImport(Library)]
    internal static partial int cuInit(uint flags);

    [LibraryImport(Library)]
    internal static partial int cuDriverGetVersion(out int version);

    [LibraryImport(Library)]
    internal static partial int cuDeviceGetCount(out int count);

    [LibraryImport(Library)]
    internal static partial int cuDeviceGet(out int device, int ordinal);

    [LibraryImport(Library)]
    internal static partial int cuDeviceGetAttribute(out int value, int attribute, int device);

    [LibraryImport(Library)]
    internal static partial int cuDeviceGetName(byte* name, int length, int device);

    /// <summary>The device's primary context (the one the CUDA runtime, and so libtorch, uses), reference-counted; never destroyed by us.</summary>
    [LibraryImport(Library)]
    internal static partial int cuDevicePrimaryCtxRetain(out nint context, int device);

    [LibraryImport(Library)]
    internal static partial int cuCtxGetCurrent(out nint context);

    [LibraryImport(Library)]
    internal static partial int cuCtxSetCurrent(nint context);

    [LibraryImport(Library)]
    internal static partial int cuModuleLoadData(out nint module, byte* image);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int cuModuleGetFunction(out nint function, nint module, string name);

    /// <summary>Stream 0 is the legacy default stream (this is not the _ptsz variant), the one libtorch uses.</summary>
    [LibraryImport(Library)]
    internal static partial int cuLaunchKernel(nint function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint sharedMemBytes, nint stream, void** kernelParams, void** extra);

    [LibraryImport(Library)]
    internal static partial int cuEventCreate(out nint @event, uint flags);

    /// <summary>On stream 0, the legacy default stream, as <see cref="cuLaunchKernel"/>.</summary>
    [LibraryImport(Library)]
    internal static partial int cuEventRecord(nint @event, nint stream);

    [LibraryImport(Library)]
    internal static partial int cuEventSynchronize(nint @event);

    [LibraryImport(Library)]
    internal static partial int cuEventElapsedTime(out float milliseconds, nint start, nint end);

    [LibraryImport(Library)]
    internal static partial int cuEventDestroy_v2(nint @event);

    [LibraryImport(Library)]
    internal static partial int cuGetErrorName(int error, out byte* name);

    [LibraryImport(Library)]
    internal static partial int cuGetErrorString(int error, out byte* text);

    /// <summary>"CUDA_ERROR_ILLEGAL_ADDRESS (an illegal memory access was encountered)".</summary>
    internal static string Describe(int error)
    {
        string name = cuGetErrorName(error, out var n) == Success ? Text(n) : $"CUresult {error}";
        string text = cuGetErrorString(error, out var s) == Success ? Text(s) : "unknown error";
        return $"{name} ({text})";
    }

    internal static string Text(byte* s) => s == null ? "" : Marshal.PtrToStringUTF8((nint)s) ?? "";
}
