using System.Diagnostics;

namespace DistTrain.Cli.Tests;

/// <summary>
/// A folder on a disk with no space left: a 64 KiB tmpfs mounted there and filled (CI runs as root), unmounted on
/// dispose. Where mounting is not allowed, <see cref="Mounted"/> is false and the folder is a plain one; then
/// <see cref="FillProbe"/> makes the write-check file of a folder a link to /dev/full, whose every write fails
/// with ENOSPC, as a full disk's do.
/// </summary>
sealed class FullDisk : IDisposable
{
    public string Path { get; }
    public bool Mounted { get; }

    public FullDisk(string parent)
    {
        Path = Directory.CreateDirectory(System.IO.Path.Combine(parent, "full")).FullName;
        Mounted = Run("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", Path);
        if (!Mounted) return;
        try
        {
            using var fill = new FileStream(System.IO.Path.Combine(Path, "fill"), FileMode.Create);
            while (true) fill.Write(new byte[4096]);
        }
        catch (IOException) { }   // ENOSPC: full
    }

    /// <summary>Without the tmpfs: the first write a rank makes in <paramref name="folder"/> (its write check) fails as on a full disk.</summary>
    public void FillProbe(string folder, int rank)
    {
        if (Mounted) return;
        Directory.CreateDirectory(folder);
        File.CreateSymbolicLink(System.IO.Path.Combine(folder, $".disttrain-write-check-{rank}"), "/dev/full");
    }

    static bool Run(string file, params string[] args)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardError = true, RedirectStandardOutput = true })!;
            p.WaitForExit(10_000);
            return p.HasExited && p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception) { return false; }   // no mount command
    }

    public void Dispose()
    {
        if (Mounted) Run("umount", "-l", Path);
    }
}
