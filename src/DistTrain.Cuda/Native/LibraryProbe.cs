using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

namespace DistTrain.Cuda.Native;

/// <summary>What to look for: a library's name for messages, its environment variable, file-name prefix, sonames, a symbol it must export, and further files to try.</summary>
internal sealed record LibrarySpec(string What, string EnvVar, string FilePrefix, string[] Sonames, string ProbeSymbol,
    Func<IEnumerable<string>> MoreCandidates, string HowToGet);

/// <summary>
/// Finds a native library the way NcclLibraries finds NCCL, in order: its environment variable;
/// a copy already mapped into this process; the default search path (LD_LIBRARY_PATH, ldconfig);
/// then <see cref="LibrarySpec.MoreCandidates"/> (the PyTorch wheel, a CUDA install). A miss
/// throws <see cref="CudaUnavailableException"/> listing every place tried and why it failed.
/// </summary>
internal static class LibraryProbe
{
    public static (nint Handle, string Path) Find(LibrarySpec spec)
    {
        var tried = new StringBuilder();
        var fromEnv = Environment.GetEnvironmentVariable(spec.EnvVar);
        if (!string.IsNullOrEmpty(fromEnv))
        {
            if (TryLoad(fromEnv, spec.ProbeSymbol, tried, out var handle))
                return (handle, PathOf(handle, spec.ProbeSymbol) ?? fromEnv);
            throw new CudaUnavailableException($"{spec.EnvVar}={fromEnv} does not load as {spec.What}: {tried.ToString().Trim()}; point {spec.EnvVar} at the library file or unset it");
        }
        tried.AppendLine(CultureInfo.InvariantCulture, $"  {spec.EnvVar}: not set");

        foreach (var mapped in MappedFiles().Where(p => Path.GetFileName(p).StartsWith(spec.FilePrefix, StringComparison.Ordinal)))
            if (TryLoad(mapped, spec.ProbeSymbol, tried, out var handle))
                return (handle, mapped);

        foreach (var soname in spec.Sonames)
            if (TryLoad(soname, spec.ProbeSymbol, tried, out var handle))
                return (handle, PathOf(handle, spec.ProbeSymbol) ?? soname);

        foreach (var file in spec.MoreCandidates().Distinct())
            if (TryLoad(file, spec.ProbeSymbol, tried, out var handle))
                return (handle, file);

        throw new CudaUnavailableException(
            $"{spec.What} was not found; tried:{Environment.NewLine}{tried}Set {spec.EnvVar} to the library file; {spec.HowToGet}");
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
            // .NET wraps dlerror()'s text, the last line, in advice about strace
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
    public static List<string> TorchLibDirectories()
    {
        string[] markers = ["libtorch_cuda.so", "libc10_cuda.so", "libtorch.so", "libtorch_cpu.so"];
        var dirs = MappedFiles().Where(p => markers.Contains(Path.GetFileName(p))).Select(p => Path.GetDirectoryName(p)!);
        var torchLib = Environment.GetEnvironmentVariable("TORCH_LIB");
        if (!string.IsNullOrEmpty(torchLib))
            dirs = dirs.Append(torchLib);
        var ldPath = (Environment.GetEnvironmentVariable("LD_LIBRARY_PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries);
        dirs = dirs.Concat(ldPath.Where(d => markers.Any(m => File.Exists(Path.Combine(d, m)))));
        return dirs.Select(Path.GetFullPath).Where(Directory.Exists).Distinct().ToList();
    }

    /// <summary>
    /// Files named <paramref name="filePrefix"/>* in torch/lib/../../nvidia/{package}/lib (where the
    /// nvidia-* wheels put them) and in torch/lib itself; a missing folder yields its pattern, so
    /// that the error shows where we looked.
    /// </summary>
    public static IEnumerable<string> WheelCandidates(string torchLib, string[] packages, string filePrefix)
    {
        var sitePackages = Path.GetFullPath(Path.Combine(torchLib, "..", ".."));
        foreach (var dir in packages.Select(p => Path.Combine(sitePackages, "nvidia", p, "lib")).Append(torchLib))
        {
            // the most specific name first: libnvrtc.so.13 before libnvrtc.so
            var files = Directory.Exists(dir)
                ? Directory.GetFiles(dir, filePrefix + "*").OrderByDescending(f => f.Length).ThenByDescending(f => f, StringComparer.Ordinal).ToList()
                : [];
            foreach (var file in files)
                yield return file;
            if (files.Count == 0 && dir != torchLib)
                yield return Path.Combine(dir, filePrefix + "*");
        }
    }

    /// <summary>lib64/{soname} under CUDA_HOME, CUDA_PATH and /usr/local/cuda that exist, or the first missing one (so the error names it).</summary>
    public static IEnumerable<string> CudaInstallCandidates(string[] sonames)
    {
        var roots = new[] { Environment.GetEnvironmentVariable("CUDA_HOME"), Environment.GetEnvironmentVariable("CUDA_PATH"), "/usr/local/cuda" };
        foreach (var root in roots.Where(r => !string.IsNullOrEmpty(r)).Distinct())
            foreach (var soname in sonames)
                yield return Path.Combine(root!, "lib64", soname);
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
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return result;   // not Linux: only the environment variables and the search path apply
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
