using System.Security.Cryptography;
using System.Text;

namespace DistTrain.Cuda;

/// <summary>
/// Compiled CUBINs on disk, so NVRTC runs once per kernel source, options, NVRTC version and
/// architecture: {dir}/{name}-{sha256}.cubin in DISTTRAIN_KERNEL_CACHE, else ~/.cache/disttrain/kernels.
/// Written to a temporary file and renamed, so a crash or a concurrent rank never leaves a torn
/// file; a folder that cannot be written only costs a compile per process.
/// </summary>
internal static class KernelCache
{
    public const string DirectoryEnv = "DISTTRAIN_KERNEL_CACHE";

    public static string Directory()
    {
        var fromEnv = Environment.GetEnvironmentVariable(DirectoryEnv);
        if (!string.IsNullOrEmpty(fromEnv)) return fromEnv;
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        var root = !string.IsNullOrEmpty(xdg) ? xdg : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(root, "disttrain", "kernels");
    }

    /// <summary>SHA-256 (hex) over every input of the compile; any change is another file.</summary>
    public static string Key(string source, IEnumerable<string> options, string nvrtcVersion, string arch)
    {
        var text = new StringBuilder()
            .Append("source\0").Append(source).Append('\0')
            .Append("options\0").AppendJoin('\u0001', options).Append('\0')
            .Append("nvrtc\0").Append(nvrtcVersion).Append('\0')
            .Append("arch\0").Append(arch);
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));
    }

    /// <summary>The cached CUBIN, or <paramref name="compile"/>'s result, stored for next time.</summary>
    public static byte[] GetOrCompile(string name, string key, Func<byte[]> compile, string? directory = null)
    {
        var dir = directory ?? Directory();
        var file = Path.Combine(dir, $"{Path.GetFileNameWithoutExtension(name)}-{key}.cubin");
        try
        {
            if (File.Exists(file)) return File.ReadAllBytes(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // unreadable: compile again and try to replace it
        }
        var cubin = compile();
        Store(dir, file, cubin);
        return cubin;
    }

    public static void Store(string dir, string file, byte[] cubin)
    {
        var temp = Path.Combine(dir, $".{Path.GetFileName(file)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            System.IO.Directory.CreateDirectory(dir);
            File.WriteAllBytes(temp, cubin);
            File.Move(temp, file, overwrite: true);   // rename(2): atomic within the folder
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try { File.Delete(temp); } catch (Exception d) when (d is IOException or UnauthorizedAccessException) { }
            LastStoreProblem = $"{file}: {e.Message}";   // a read-only cache costs a compile per process, nothing else
        }
    }

    /// <summary>Why the last CUBIN could not be stored (null: none failed); kernel-test prints it.</summary>
    public static string? LastStoreProblem { get; private set; }
}
