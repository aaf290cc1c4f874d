using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using TorchSharp;

namespace DistTrain.Distributed.Nccl;

/// <summary>
/// Finds <c>libnccl.so.2</c> and <c>libcudart.so</c> and routes this assembly's "nccl", "cudart"
/// and "LibTorchSharp" imports to them. Each library is taken from, in order:
/// its environment variable (<see cref="NcclEnv"/>, <see cref="CudartEnv"/>); the copy already
/// mapped into this process (libtorch_cuda.so of a PyTorch wheel pulls both in, and NCCL should
/// share it); the default search path (LD_LIBRARY_PATH, ldconfig: a CUDA or distribution
/// install); the PyTorch wheel's <c>site-packages/nvidia/*/lib</c> next to <c>torch/lib</c>.
/// </summary>
internal static class NcclLibraries
{
    public const string NcclEnv = "DISTTRAIN_NCCL_LIB";
    public const string CudartEnv = "DISTTRAIN_CUDART_LIB";

    static readonly Lock Gate = new();
    static nint _nccl, _cudart;
    static bool _resolverSet;

    /// <summary>The file NCCL was loaded from (empty before <see cref="Load"/>).</summary>
    public static string NcclPath { get; private set; } = "";

    /// <summary>The file the CUDA runtime was loaded from (empty before <see cref="Load"/>).</summary>
    public static string CudartPath { get; private set; } = "";

    /// <summary>Loads both libraries once; throws <see cref="CommunicatorException"/> listing every place tried.</summary>
    public static void Load()
    {
        lock (Gate)
        {
            if (_nccl != 0)
                return;
            var torchLibs = TorchLibDirectories();
            var (nccl, ncclPath) = Find("NCCL", NcclEnv, "libnccl.so", ["libnccl.so.2", "libnccl.so"], "ncclGetVersion",
                torchLibs.SelectMany(lib => WheelCandidates(lib, ["nccl"], "libnccl.so")),
                "install it with `pip install nvidia-nccl-cu13` (PyTorch's CUDA wheels depend on it)");
            var (cudart, cudartPath) = Find("the CUDA runtime", CudartEnv, "libcudart.so", ["libcudart.so.13", "libcudart.so.12", "libcudart.so"], "cudaSetDevice",
                torchLibs.SelectMany(lib => WheelCandidates(lib, ["cu13", "cuda_runtime"], "libcudart.so")).Concat(CudaInstallCandidates()),
                "it comes with the PyTorch wheel (nvidia-cuda-runtime) or a CUDA toolkit");
            if (!_resolverSet)
            {
                try
                {
                    NativeLibrary.SetDllImportResolver(typeof(NcclLibraries).Assembly, Resolve);
                }
                catch (InvalidOperationException e)
                {
                    throw new CommunicatorException(
                        "DistTrain.Distributed already has a DllImport resolver, so NCCL's imports cannot be routed; " +
                        "let that resolver delegate the names \"nccl\", \"cudart\" and \"LibTorchSharp\" to NcclLibraries", e);
                }
                _resolverSet = true;
            }
            (_nccl, NcclPath, _cudart, CudartPath) = (nccl, ncclPath, cudart, cudartPath);
        }
    }

    static nint Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath) => name switch
    {
        NcclNative.Nccl => _nccl,
        NcclNative.Cudart => _cudart,
        // the very file TorchSharp loaded: same name, probed from TorchSharp's assembly
        NcclNative.LibTorchSharp => NativeLibrary.TryLoad(name, typeof(torch).Assembly, null, out var handle) ? handle : 0,
        _ => 0,
    };

    static (nint Handle, string Path) Find(string what, string envVar, string filePrefix, string[] sonames, string probeSymbol,
        IEnumerable<string> wheelCandidates, string howToGet)
    {
        var tried = new StringBuilder();

        var fromEnv = Environment.GetEnvironmentVariable(envVar);
        if (!string.IsNullOrEmpty(fromEnv))
        {
            if (TryLoad(fromEnv, probeSymbol, tried, out var handle))
                return (handle, PathOf(handle, probeSymbol) ?? fromEnv);
            throw new CommunicatorException($"{envVar}={fromEnv} does not load as {what}: {tried.ToString().Trim()}; point {envVar} at the library file or unset it");
        }
        tried.AppendLine(CultureInfo.InvariantCulture, $"  {envVar}: not set");

        foreach (var mapped in MappedFiles().Where(p => Path.GetFileName(p).StartsWith(filePrefix, StringComparison.Ordinal)).Distinct())
            if (TryLoad(mapped, probeSymbol, tried, out var handle))
                return (handle, mapped);

        foreach (var soname in sonames)
            if (TryLoad(soname, probeSymbol, tried, out var handle))
                return (handle, PathOf(handle, probeSymbol) ?? soname);

        bool anyWheelPlace = false;
        foreach (var file in wheelCandidates.Distinct())
        {
            anyWheelPlace = true;
            if (TryLoad(file, probeSymbol, tried, out var handle))
                return (handle, file);
        }
        if (!anyWheelPlace)
            tried.AppendLine("  PyTorch wheel: no torch/lib found (none loaded in this process, TORCH_LIB unset, none on LD_LIBRARY_PATH)");

        throw new CommunicatorException(
            $"{what} was not found; tried:{Environment.NewLine}{tried}" +
            $"Set {envVar} to the library file, or put the PyTorch wheel's torch/lib on LD_LIBRARY_PATH; {howToGet}");
    }

    static bool TryLoad(string nameOrPath, string probeSymbol, StringBuilder tried, out nint handle)
    {
        handle = 0;
        if (nameOrPath.Contains('/') && !File.Exists(nameOrPath))
        {
            tried.AppendLine(CultureInfo.InvariantCulture, $"  {nameOrPath}: no such file");
            return false;
        }
        try
        {
            handle = NativeLibrary.Load(nameOrPath);
        }
        catch (DllNotFoundException e)
        {
            // .NET wraps dlerror()'s text, which is the last line, in advice about strace
            var reason = e.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault() ?? e.Message;
            tried.AppendLine(CultureInfo.InvariantCulture, $"  {nameOrPath}: {reason}");
            return false;
        }
        if (!NativeLibrary.TryGetExport(handle, probeSymbol, out _))
        {
            tried.AppendLine(CultureInfo.InvariantCulture, $"  {nameOrPath}: loads, but has no {probeSymbol}");
            NativeLibrary.Free(handle);
            handle = 0;
            return false;
        }
        return true;
    }

    /// <summary>torch/lib of the libtorch in use: where it is mapped, else TORCH_LIB, else LD_LIBRARY_PATH entries holding it.</summary>
    static List<string> TorchLibDirectories()
    {
        string[] markers = ["libtorch_cuda.so", "libc10_cuda.so", "libtorch.so", "libtorch_cpu.so"];
        var dirs = MappedFiles().Where(p => markers.Contains(Path.GetFileName(p))).Select(p => Path.GetDirectoryName(p)!);
        var torchLib = Environment.GetEnvironmentVariable("TORCH_LIB");
        if (!string.IsNullOrEmpty(torchLib))
            dirs = dirs.Append(torchLib);
        var ldPath = (Environment.GetEnvironmentVariable("LD_LIBRARY_PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries);
        dirs = dirs.Concat(ldPath.Where(d => markers.Any(m => File.Exists(Path.Combine(d, m)))));
        return dirs.Select(d => Path.GetFullPath(d)).Where(Directory.Exists).Distinct().ToList();
    }

    /// <summary>torch/lib/../../nvidia/{package}/lib/{prefix}*: where the nvidia-* wheels put their libraries.</summary>
    static IEnumerable<string> WheelCandidates(string torchLib, string[] packages, string filePrefix)
    {
        var sitePackages = Path.GetFullPath(Path.Combine(torchLib, "..", ".."));
        var dirs = packages.Select(p => Path.Combine(sitePackages, "nvidia", p, "lib")).Append(torchLib);
        foreach (var dir in dirs)
        {
            // the most specific name first: libnccl.so.2 before libnccl.so, libcudart.so.13 before .so.12
            var files = Directory.Exists(dir)
                ? Directory.GetFiles(dir, filePrefix + "*").OrderByDescending(f => f.Length).ThenByDescending(f => f, StringComparer.Ordinal)
                : Enumerable.Empty<string>();
            bool any = false;
            foreach (var file in files)
            {
                any = true;
                yield return file;
            }
            if (!any && dir != torchLib)
                yield return Path.Combine(dir, filePrefix + "*");   // lands in the error as "no such file": where we looked
        }
    }

    static IEnumerable<string> CudaInstallCandidates()
    {
        var roots = new[] { Environment.GetEnvironmentVariable("CUDA_HOME"), Environment.GetEnvironmentVariable("CUDA_PATH"), "/usr/local/cuda" };
        foreach (var root in roots.Where(r => !string.IsNullOrEmpty(r)).Distinct())
            foreach (var soname in new[] { "libcudart.so.13", "libcudart.so.12" })
            {
                var file = Path.Combine(root!, "lib64", soname);
                if (File.Exists(file))
                    yield return file;
            }
    }

    /// <summary>The file that holds <paramref name="symbol"/> of a loaded library, from /proc/self/maps.</summary>
    static string? PathOf(nint handle, string symbol)
    {
        if (!NativeLibrary.TryGetExport(handle, symbol, out var address))
            return null;
        foreach (var (start, end, path) in Mappings())
            if ((ulong)address >= start && (ulong)address < end)
                return path;
        return null;
    }

    static IEnumerable<string> MappedFiles() => Mappings().Select(m => m.Path).Distinct();

    /// <summary>File-backed mappings of this process: "start-end perms offset dev inode path".</summary>
    static List<(ulong Start, ulong End, string Path)> Mappings()
    {
        var result = new List<(ulong, ulong, string)>();
        string[] lines;
        try
        {
            lines = File.ReadAllLines("/proc/self/maps");
        }
        catch (IOException)
        {
            return result;   // not Linux: only the environment variables and the search path apply
        }
        catch (UnauthorizedAccessException)
        {
            return result;
        }
        foreach (var line in lines)
        {
            int slash = line.IndexOf('/', StringComparison.Ordinal);
            int dash = line.IndexOf('-', StringComparison.Ordinal);
            int space = line.IndexOf(' ', StringComparison.Ordinal);
            if (slash < 0 || dash < 0 || space < dash)
                continue;
            if (ulong.TryParse(line.AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var start) &&
                ulong.TryParse(line.AsSpan(dash + 1, space - dash - 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var end))
                result.Add((start, end, line[slash..].Replace(" (deleted)", "", StringComparison.Ordinal)));
        }
        return result;
    }
}
