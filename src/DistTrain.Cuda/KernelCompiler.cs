using System.Runtime.InteropServices;
using System.Text;
using DistTrain.Cuda.Native;
using static DistTrain.Cuda.Native.Nvrtc;

namespace DistTrain.Cuda;

/// <summary>CUDA C++ source -> CUBIN for one architecture, through NVRTC (no host compiler, no headers).</summary>
internal static class KernelCompiler
{
    /// <summary>
    /// The options every kernel gets: CUBIN for this device, functions device-side by default, C++17.
    /// No --use_fast_math: the norms and AdamW need IEEE division and sqrt to match the reference.
    /// </summary>
    public static string[] Options(string arch) => [$"--gpu-architecture={arch}", "-default-device", "--std=c++17"];

    /// <summary>"13.0": part of the cache key (a new NVRTC may generate different code).</summary>
    public static string NvrtcVersion()
    {
        CudaLibraries.Load();
        int r = nvrtcVersion(out int major, out int minor);
        if (r != Success) throw new CudaUnavailableException($"nvrtcVersion failed: {Describe(r)}");
        return $"{major}.{minor}";
    }

    public static unsafe byte[] Compile(string name, string source, string[] options)
    {
        CudaLibraries.Load();
        int r = nvrtcCreateProgram(out nint program, source, name, 0, null, null);
        if (r != Success) throw new KernelCompileException($"{name}: nvrtcCreateProgram failed: {Describe(r)}");
        try
        {
            var utf8 = options.Select(o => Marshal.StringToCoTaskMemUTF8(o)).ToArray();
            try
            {
                fixed (nint* optionPointers = utf8)
                    r = nvrtcCompileProgram(program, utf8.Length, (byte**)optionPointers);
            }
            finally
            {
                foreach (var p in utf8) Marshal.FreeCoTaskMem(p);
            }
            if (r != Success)
                throw new KernelCompileException(
                    $"{name}: NVRTC could not compile it for {string.Join(' ', options)}: {Describe(r)}{Environment.NewLine}{Log(program)}" +
                    $"{Environment.NewLine}This is a bug in DistTrain's kernel source (or an NVRTC too old for this GPU); run with train.kernels=reference meanwhile");
            if ((r = nvrtcGetCUBINSize(program, out nuint size)) != Success || size == 0)
                throw new KernelCompileException($"{name}: no CUBIN ({Describe(r)}); --gpu-architecture must name a real architecture (sm_XY), got {string.Join(' ', options)}");
            var cubin = new byte[(int)size];
            fixed (byte* p = cubin)
                if ((r = nvrtcGetCUBIN(program, p)) != Success)
                    throw new KernelCompileException($"{name}: nvrtcGetCUBIN failed: {Describe(r)}");
            return cubin;
        }
        finally
        {
            nvrtcDestroyProgram(ref program);
        }
    }

    static unsafe string Log(nint program)
    {
        if (nvrtcGetProgramLogSize(program, out nuint size) != Success || size <= 1)
            return "(no log)";
        var log = new byte[(int)size];
        fixed (byte* p = log)
            if (nvrtcGetProgramLog(program, p) != Success)
                return "(the log could not be read)";
        return Encoding.UTF8.GetString(log, 0, log.Length - 1);   // NUL-terminated
    }
}
