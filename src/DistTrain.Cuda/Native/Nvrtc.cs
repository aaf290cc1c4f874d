using System.Runtime.InteropServices;

namespace DistTrain.Cuda.Native;

// Hand-written because .NET has no NVRTC binding. Declarations follow nvrtc.h (CUDA 12/13):
// nvrtcResult is an int, nvrtcProgram a pointer, sizes are size_t (nuint).
internal static unsafe partial class Nvrtc
{
    internal const string Library = "nvrtc";

    internal const int Success = 0;

    [LibraryImport(Library)]
    internal static partial int nvrtcVersion(out int major, out int minor);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int nvrtcCreateProgram(out nint program, string source, string name, int numHeaders, byte** headers, byte** includeNames);

    [LibraryImport(Library)]
    internal static partial int nvrtcCompileProgram(nint program, int numOptions, byte** options);

    [LibraryImport(Library)]
    internal static partial int nvrtcGetProgramLogSize(nint program, out nuint size);

    [LibraryImport(Library)]
    internal static partial int nvrtcGetProgramLog(nint program, byte* log);

    [LibraryImport(Library)]
    internal static partial int nvrtcGetCUBINSize(nint program, out nuint size);

    [LibraryImport(Library)]
    internal static partial int nvrtcGetCUBIN(nint program, byte* cubin);

    [LibraryImport(Library)]
    internal static partial int nvrtcDestroyProgram(ref nint program);

    [LibraryImport(Library)]
    internal static partial byte* nvrtcGetErrorString(int result);

    internal static string Describe(int result) => $"{CudaDriver.Text(nvrtcGetErrorString(result))} (nvrtcResult {result})";
}
