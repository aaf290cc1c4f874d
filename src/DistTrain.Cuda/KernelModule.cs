using System.Collections.Concurrent;
using System.Reflection;
using static DistTrain.Cuda.Native.CudaDriver;

namespace DistTrain.Cuda;

/// <summary>A kernel: its function handle in a loaded module, and the device whose context holds it.</summary>
internal sealed record CudaFunction(CudaDevice Device, nint Handle, string Name);

/// <summary>
/// One embedded .cu file (an op's kernels), compiled for a device's architecture (through the disk
/// cache) and loaded into its primary context once per process; then its functions by name.
/// </summary>
internal sealed class KernelModule
{
    static readonly ConcurrentDictionary<(int Device, string Resource), Lazy<KernelModule>> Loaded = new();

    readonly CudaDevice _device;
    readonly nint _module;
    readonly string _resource;
    readonly ConcurrentDictionary<string, CudaFunction> _functions = new();

    KernelModule(CudaDevice device, string resource)
    {
        (_device, _resource) = (device, resource);
        var source = Source(resource);
        var options = KernelCompiler.Options(device.Arch);
        var key = KernelCache.Key(source, options, KernelCompiler.NvrtcVersion(), device.Arch);
        var cubin = KernelCache.GetOrCompile(resource, key, () => KernelCompiler.Compile(resource, source, options));
        device.MakeCurrent();
        unsafe
        {
            fixed (byte* image = cubin)
            {
                int r = cuModuleLoadData(out _module, image);
                if (r != Success)
                    throw new CudaException(r, $"{resource}: cuModuleLoadData failed on {device.Name} ({device.Arch}): {Describe(r)}; " +
                                               $"delete the cached CUBINs in {KernelCache.Directory()} and retry, or run with train.kernels=reference");
            }
        }
    }

    public static KernelModule Get(CudaDevice device, string resource)
    {
        var lazy = Loaded.GetOrAdd((device.Index, resource), k => new Lazy<KernelModule>(() => new KernelModule(device, k.Resource)));
        try
        {
            return lazy.Value;
        }
        catch
        {
            Loaded.TryRemove((device.Index, resource), out _);
            throw;
        }
    }

    public CudaFunction Function(string name) => _functions.GetOrAdd(name, n =>
    {
        _device.MakeCurrent();
        int r = cuModuleGetFunction(out var handle, _module, n);
        if (r != Success) throw new CudaException(r, $"{_resource}: no kernel {n}: {Describe(r)}");
        return new CudaFunction(_device, handle, n);
    });

    /// <summary>The embedded source (logical name = file name, see DistTrain.Cuda.csproj).</summary>
    public static string Source(string resource)
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream(resource)
            ?? throw new InvalidOperationException($"kernel source {resource} is not embedded in {Assembly.GetExecutingAssembly().GetName().Name}; check the EmbeddedResource item");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
