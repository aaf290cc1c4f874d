using DistTrain.Cuda.Native;

namespace DistTrain.Cuda.Tests;

/// <summary>Where NVRTC is looked for, as a host without it (CI) reports.</summary>
public class LibraryLookupTests
{
    [Fact]
    public void AMissingNvrtcListsEveryPlaceTried()
    {
        var before = Environment.GetEnvironmentVariable(CudaLibraries.NvrtcEnv);
        try
        {
            Environment.SetEnvironmentVariable(CudaLibraries.NvrtcEnv, null);
            CudaUnavailableException e;
            try
            {
                LibraryProbe.Find(CudaLibraries.NvrtcSpec());
                return;   // this host has NVRTC: nothing to report
            }
            catch (CudaUnavailableException caught)
            {
                e = caught;
            }
            Assert.StartsWith("NVRTC (the CUDA runtime compiler) was not found; tried:", e.Message);
            Assert.Contains("DISTTRAIN_NVRTC_LIB: not set", e.Message);
            foreach (var soname in CudaLibraries.NvrtcSonames)
                Assert.Contains($"  {soname}: ", e.Message);
            Assert.Contains("/usr/local/cuda/lib64/libnvrtc.so.13: no such file", e.Message);
            Assert.Contains("Set DISTTRAIN_NVRTC_LIB to the library file", e.Message);
            Assert.Contains("train.kernels=reference", e.Message);
        }
        finally
        {
            Environment.SetEnvironmentVariable(CudaLibraries.NvrtcEnv, before);
        }
    }

    [Fact]
    public void AnEnvironmentVariableThatDoesNotLoadIsNamed()
    {
        var before = Environment.GetEnvironmentVariable(CudaLibraries.NvrtcEnv);
        try
        {
            Environment.SetEnvironmentVariable(CudaLibraries.NvrtcEnv, "/nonexistent/libnvrtc.so.13");
            var e = Assert.Throws<CudaUnavailableException>(() => LibraryProbe.Find(CudaLibraries.NvrtcSpec()));
            Assert.Contains("DISTTRAIN_NVRTC_LIB=/nonexistent/libnvrtc.so.13 does not load", e.Message);
            Assert.Contains("/nonexistent/libnvrtc.so.13: no such file", e.Message);
        }
        finally
        {
            Environment.SetEnvironmentVariable(CudaLibraries.NvrtcEnv, before);
        }
    }

    [Fact]
    public void WheelCandidatesLookInTheNvidiaPackagesNextToTorchLib()
    {
        var site = Directory.CreateTempSubdirectory("site-packages-").FullName;
        try
        {
            var torchLib = Directory.CreateDirectory(Path.Combine(site, "torch", "lib")).FullName;
            var cu13 = Directory.CreateDirectory(Path.Combine(site, "nvidia", "cu13", "lib")).FullName;
            File.WriteAllText(Path.Combine(cu13, "libnvrtc.so.13"), "");
            File.WriteAllText(Path.Combine(cu13, "libnvrtc-builtins.so.13.0"), "");
            var found = LibraryProbe.WheelCandidates(torchLib, ["cu13", "cuda_nvrtc"], "libnvrtc.so").ToList();
            Assert.Equal([Path.Combine(cu13, "libnvrtc.so.13"), Path.Combine(site, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*")], found);
        }
        finally
        {
            Directory.Delete(site, true);
        }
    }
}
