using System.Reflection;
using System.Runtime.InteropServices;
using TorchSharp;

namespace DistTrain.Cuda.Native;

/// <summary>
/// Finds the CUDA driver (libcuda.so.1, installed with the driver) and NVRTC (libnvrtc.so.13 from
/// the PyTorch wheel's nvidia/cu13/lib, with libnvrtc-builtins beside it) and routes this
/// assembly's "cuda", "nvrtc" and "LibTorchSharp" imports to them (this assembly only).
/// </summary>
internal static class CudaLibraries
{
    public const string DriverEnv = "DISTTRAIN_CUDA_DRIVER_LIB";
    public const string NvrtcEnv = "DISTTRAIN_NVRTC_LIB";

    static readonly Lock Gate = new();
    static nint _driver, _nvrtc;
    static bool _resolverSet;

    public static string DriverPath { get; private set; } = "";
    public static string NvrtcPath { get; private set; } = "";

    internal static LibrarySpec DriverSpec() => new("the CUDA driver library", DriverEnv, "libcuda.so", ["libcuda.so.1", "libcuda.so"], "cuInit",
        () => [], "it comes with the NVIDIA driver; on a host without a GPU use train.kernels=reference");

    internal static readonly string[] NvrtcSonames = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"];

    internal static LibrarySpec NvrtcSpec() => new("NVRTC (the CUDA runtime compiler)", NvrtcEnv, "libnvrtc.so", NvrtcSonames, "nvrtcVersion",
        () => LibraryProbe.TorchLibDirectories().SelectMany(lib => LibraryProbe.WheelCandidates(lib, ["cu13", "cuda_nvrtc"], "libnvrtc.so"))
            .Concat(LibraryProbe.CudaInstallCandidates(NvrtcSonames)),
        "it comes with PyTorch's CUDA wheels (nvidia/cu13/lib or nvidia/cuda_nvrtc/lib next to torch/lib; `pip install nvidia-cuda-nvrtc`) " +
        "or a CUDA toolkit (/usr/local/cuda/lib64); or use train.kernels=reference");

    /// <summary>Loads both libraries once; throws <see cref="CudaUnavailableException"/> listing every place tried.</summary>
    public static void Load()
    {
        lock (Gate)
        {
            if (_nvrtc != 0)
                return;
            var (driver, driverPath) = LibraryProbe.Find(DriverSpec());
            var (nvrtc, nvrtcPath) = LibraryProbe.Find(NvrtcSpec());
            if (!_resolverSet)
            {
                try
                {
                    NativeLibrary.SetDllImportResolver(typeof(CudaLibraries).Assembly, Resolve);
                }
                catch (InvalidOperationException e)
                {
                    throw new CudaUnavailableException("DistTrain.Cuda already has a DllImport resolver; let it delegate \"cuda\", \"nvrtc\" and \"LibTorchSharp\" to CudaLibraries", e);
                }
                _resolverSet = true;
            }
            (_driver, DriverPath, _nvrtc, NvrtcPath) = (driver, driverPath, nvrtc, nvrtcPath);
        }
    }

    static nint Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath) => name switch
    {
        CudaDriver.Library => _driver,
        Nvrtc.Library => _nvrtc,
        _ => 0,
    };
}
