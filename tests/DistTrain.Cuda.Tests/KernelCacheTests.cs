namespace DistTrain.Cuda.Tests;

public class KernelCacheTests
{
    static readonly string[] Options = KernelCompiler.Options("sm_90");

    [Fact]
    public void TheKeyChangesWithSourceOptionsNvrtcVersionAndArchitecture()
    {
        var key = KernelCache.Key("__global__ void k() {}", Options, "13.0", "sm_90");
        Assert.Equal(64, key.Length);   // SHA-256 in hex
        Assert.Equal(key, KernelCache.Key("__global__ void k() {}", Options, "13.0", "sm_90"));
        Assert.NotEqual(key, KernelCache.Key("__global__ void k() { }", Options, "13.0", "sm_90"));
        Assert.NotEqual(key, KernelCache.Key("__global__ void k() {}", [.. Options, "--use_fast_math"], "13.0", "sm_90"));
        Assert.NotEqual(key, KernelCache.Key("__global__ void k() {}", Options, "13.1", "sm_90"));
        Assert.NotEqual(key, KernelCache.Key("__global__ void k() {}", Options, "13.0", "sm_100"));
        // option boundaries count: ["a b"] is not ["a", "b"]
        Assert.NotEqual(KernelCache.Key("s", ["a b"], "13.0", "sm_90"), KernelCache.Key("s", ["a", "b"], "13.0", "sm_90"));
    }

    [Fact]
    public void TheOptionsTargetTheDevicesArchitectureWithoutFastMath()
    {
        Assert.Equal(["--gpu-architecture=sm_90", "-default-device", "--std=c++17"], Options);
    }

    [Fact]
    public void ACompiledKernelIsStoredOnceAndReadBackWithoutCompiling()
    {
        var dir = Directory.CreateTempSubdirectory("disttrain-kernels-").FullName;
        try
        {
            int compiles = 0;
            byte[] Compile() { compiles++; return [1, 2, 3]; }
            Assert.Equal([1, 2, 3], KernelCache.GetOrCompile("rmsnorm.cu", "abc", Compile, dir));
            Assert.Equal([1, 2, 3], KernelCache.GetOrCompile("rmsnorm.cu", "abc", Compile, dir));
            Assert.Equal(1, compiles);
            Assert.Equal(["rmsnorm-abc.cubin"], Directory.GetFiles(dir).Select(Path.GetFileName));   // no temporary file left
            KernelCache.GetOrCompile("rmsnorm.cu", "def", Compile, dir);
            Assert.Equal(2, compiles);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void TheCacheFolderComesFromTheEnvironment()
    {
        var before = Environment.GetEnvironmentVariable(KernelCache.DirectoryEnv);
        try
        {
            Environment.SetEnvironmentVariable(KernelCache.DirectoryEnv, "/tmp/somewhere");
            Assert.Equal("/tmp/somewhere", KernelCache.Directory());
            Environment.SetEnvironmentVariable(KernelCache.DirectoryEnv, null);
            Assert.EndsWith(Path.Combine("disttrain", "kernels"), KernelCache.Directory());
        }
        finally
        {
            Environment.SetEnvironmentVariable(KernelCache.DirectoryEnv, before);
        }
    }
}
