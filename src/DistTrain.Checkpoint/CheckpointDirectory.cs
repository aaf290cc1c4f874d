using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;

namespace DistTrain.Checkpoint;

/// <summary>
/// The on-disk layout under a checkpoint root: finished checkpoints are root/step-XXXXXXXX/ holding
/// manifest.json; a save in progress is root/.tmp-step-XXXXXXXX-RUN@JOB/ (its owner in its name, so that
/// the leftovers of an interrupted save are known to be this job's); root/latest names the checkpoint
/// to resume from. A save is written into the temporary folder, fsynced, renamed, and only then does
/// latest move, so a crash at any point leaves either the old or the new checkpoint, never a half one.
/// </summary>
public static partial class CheckpointDirectory
{
    public const string ManifestFileName = "manifest.json";
    public const string LatestFileName = "latest";
    const string TempPrefix = ".tmp-";

    [GeneratedRegex(@"^step-(\d{8,})$")]
    private static partial Regex StepFolder();

    // .tmp-step-XXXXXXXX-RUN@JOB or .tmp-superseded-step-XXXXXXXX-GUID@JOB; RUN and JOB percent-escaped (no '@' in either)
    [GeneratedRegex(@"^\.tmp-(?:superseded-)?step-(\d{8,})-([^@]+)@([^@]+)$")]
    private static partial Regex OwnedTemp();

    /// <summary>The finished folder name of a step: step-00001234.</summary>
    public static string StepName(long step) => "step-" + step.ToString("D8", CultureInfo.InvariantCulture);

    /// <summary>Creates root/.tmp-step-00001234-guid/ and returns its full path.</summary>
    public static string BeginTemp(string root, int step)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        Directory.CreateDirectory(root);
        string temp = Path.Combine(Path.GetFullPath(root), $"{TempPrefix}{StepName(step)}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temp);
        return temp;
    }

    /// <summary>
    /// root/.tmp-step-00001234-RUN@JOB/, created if missing: every rank of one save computes the same
    /// name from the owner they share, so no rank waits for another to create it.
    /// </summary>
    public static string TempFor(string root, long step, SaveOwner owner)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        string temp = Path.Combine(Path.GetFullPath(root), $"{TempPrefix}{StepName(step)}-{owner.Tag(owner.Run)}");
        Directory.CreateDirectory(temp);
        return temp;
    }

    /// <summary>Where a finished checkpoint of a step goes when a new save of the same step replaces it: root/.tmp-superseded-step-00001234-GUID@JOB.</summary>
    public static string SupersededFor(string root, long step, SaveOwner owner) =>
        Path.Combine(Path.GetFullPath(root), $"{TempPrefix}superseded-{StepName(step)}-{owner.Tag(Guid.NewGuid().ToString("N"))}");

    /// <summary>Fsyncs every file and folder under tempDir, renames it to finalDir, fsyncs the parent.</summary>
    public static void Commit(string tempDir, string finalDir)
    {
        if (!Directory.Exists(tempDir))
            throw new CheckpointException($"{tempDir}: the temporary checkpoint folder does not exist; call BeginTemp and write the files first");
        if (Directory.Exists(finalDir) || File.Exists(finalDir))
            throw new CheckpointException($"{finalDir}: already exists; a checkpoint of this step was saved before, delete it or save under another step");
        foreach (var file in Directory.EnumerateFiles(tempDir, "*", SearchOption.AllDirectories))
            FsyncFile(file);
        foreach (var dir in Directory.EnumerateDirectories(tempDir, "*", SearchOption.AllDirectories))
            FsyncDirectory(dir);
        FsyncDirectory(tempDir);
        Directory.Move(tempDir, finalDir);
        FsyncDirectory(Path.GetDirectoryName(Path.GetFullPath(finalDir))!);
    }

    /// <summary>Points root/latest at a finished checkpoint: writes latest.tmp, fsyncs it, renames it over latest (atomic replace).</summary>
    public static void PointLatest(string root, string name)
    {
        if (name.StartsWith(TempPrefix, StringComparison.Ordinal) || name.Contains('/') || name.Contains('\\') || !StepFolder().IsMatch(name))
            throw new ArgumentException($"latest must name a finished checkpoint folder (step-XXXXXXXX), not '{name}'", nameof(name));
        if (!File.Exists(Path.Combine(root, name, ManifestFileName)))
            throw new CheckpointException($"{Path.Combine(root, name)}: not a finished checkpoint (no {ManifestFileName}); commit it before pointing latest at it");
        string temp = Path.Combine(root, LatestFileName + ".tmp");
        using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            file.Write(Encoding.UTF8.GetBytes(name + "\n"));
            file.Flush(flushToDisk: true);
        }
        File.Move(temp, Path.Combine(root, LatestFileName), overwrite: true);
        FsyncDirectory(root);
    }

    /// <summary>The full path of the checkpoint root/latest names, or null when there is no latest.</summary>
    public static string? ResolveLatest(string root)
    {
        string? name = LatestName(root);
        if (name is null) return null;
        string dir = Path.Combine(Path.GetFullPath(root), name);
        if (!StepFolder().IsMatch(name) || !File.Exists(Path.Combine(dir, ManifestFileName)))
        {
            var complete = Complete(root);
            string hint = complete.Count > 0 ? $"the newest finished checkpoint is {complete[^1]}" : "there is no finished checkpoint";
            throw new CheckpointException($"{Path.Combine(root, LatestFileName)}: names '{name}', which is not a finished checkpoint; {hint}; point latest at it or resume from an explicit path");
        }
        return dir;
    }

    /// <summary>Finished checkpoints (step-XXXXXXXX folders holding manifest.json), full paths, oldest step first.</summary>
    public static IReadOnlyList<string> Complete(string root)
    {
        if (!Directory.Exists(root)) return [];
        return Directory.EnumerateDirectories(Path.GetFullPath(root))
            .Select(dir => (Dir: dir, Match: StepFolder().Match(Path.GetFileName(dir))))
            .Where(d => d.Match.Success && File.Exists(Path.Combine(d.Dir, ManifestFileName)))
            .OrderBy(d => long.Parse(d.Match.Groups[1].Value, CultureInfo.InvariantCulture))
            .Select(d => d.Dir)
            .ToList();
    }

    /// <summary>Leftovers of saves that never committed (.tmp-* folders), full paths.</summary>
    public static IReadOnlyList<string> Partial(string root) => PartialSaves(root).Select(p => p.Path).ToList();

    /// <summary>Leftovers of saves that never committed (.tmp-* folders) with their step and owner, by path.</summary>
    public static IReadOnlyList<PartialSave> PartialSaves(string root)
    {
        if (!Directory.Exists(root)) return [];
        return Directory.EnumerateDirectories(Path.GetFullPath(root), TempPrefix + "*").Order(StringComparer.Ordinal)
            .Select(dir => OwnedTemp().Match(Path.GetFileName(dir)) is { Success: true } m
                ? new PartialSave(dir, long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), new SaveOwner(Uri.UnescapeDataString(m.Groups[3].Value), Uri.UnescapeDataString(m.Groups[2].Value)))
                : new PartialSave(dir, null, null))
            .ToList();
    }

    /// <summary>
    /// Deletes finished checkpoints older than the newest k (never the one latest names) and the stale .tmp-*
    /// folders of <paramref name="owner"/>'s job: every one an earlier run of the job left (interrupted saves),
    /// and the run's own up to <paramref name="upToStep"/> (a later step's save may be under way). Another
    /// job's folders, and folders that name no job, are left alone: their save may still be writing.
    /// Call it from the one committing process after a commit.
    /// </summary>
    public static void KeepLast(string root, int k, SaveOwner owner, long upToStep = long.MaxValue)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        string? latest = LatestName(root);
        var complete = Complete(root);
        foreach (var dir in complete.Take(Math.Max(0, complete.Count - k)))
            if (Path.GetFileName(dir) != latest)
                Directory.Delete(dir, recursive: true);
        foreach (var partial in PartialSaves(root))
            if (partial.Owner is { } o && o.Job == owner.Job && (o.Run != owner.Run || partial.Step <= upToStep))
                Directory.Delete(partial.Path, recursive: true);
        FsyncDirectory(root);
    }

    static string? LatestName(string root)
    {
        string path = Path.Combine(root, LatestFileName);
        return File.Exists(path) ? File.ReadAllText(path).Trim() : null;
    }

    /// <summary>Flushes a written file to the disk (fsync); throws naming the file when the disk refuses.</summary>
    public static void FsyncFile(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            using var file = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
            file.Flush(flushToDisk: true);
            return;
        }
        int fd = Native.open(path, Native.O_RDONLY);
        if (fd < 0)
            throw new IOException($"{path}: cannot open to fsync (errno {Marshal.GetLastPInvokeError()})");
        try
        {
            if (Native.fsync(fd) != 0)
                throw new IOException($"{path}: fsync failed (errno {Marshal.GetLastPInvokeError()}); the disk may be full or failing, the checkpoint is not durable");
        }
        finally { Native.close(fd); }
    }

    /// <summary>Makes renames and new entries in a folder durable. Best effort: some file systems cannot fsync a folder.</summary>
    internal static bool FsyncDirectory(string path)
    {
        if (OperatingSystem.IsWindows()) return false;   // NTFS journals metadata; a folder cannot be opened for fsync
        int fd = Native.open(path, Native.O_RDONLY | Native.ODirectory);
        if (fd < 0) return false;
        bool synced = Native.fsync(fd) == 0;
        Native.close(fd);
        return synced;
    }

    static class Native
    {
        public const int O_RDONLY = 0;

        // O_DIRECTORY differs by platform: 0200000 on Linux x86/x64, 040000 on Linux Arm, 0x100000 on macOS.
        public static int ODirectory =>
            OperatingSystem.IsMacOS() ? 0x100000
            : RuntimeInformation.ProcessArchitecture is Architecture.Arm or Architecture.Arm64 ? 0x4000
            : 0x10000;

        [DllImport("libc", SetLastError = true)]
        public static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

        [DllImport("libc", SetLastError = true)]
        public static extern int fsync(int fd);

        [DllImport("libc", SetLastError = true)]
        public static extern int close(int fd);
    }
}
