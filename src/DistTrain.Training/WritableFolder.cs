using DistTrain.Training.Config;

namespace DistTrain.Training;

/// <summary>
/// A folder a run writes to, checked at start: created if missing, then a small file written, flushed to the disk
/// and removed, so that a full disk or a folder that cannot be written stops the run before its first step with
/// the path and what to do, rather than at the first save or as an unhandled exception.
/// </summary>
public static class WritableFolder
{
    /// <summary>Each rank probes with its own file: ranks of several nodes may share the folder.</summary>
    public static string ProbeName(int rank) => $".disttrain-write-check-{rank}";

    /// <param name="key">the config key that names the folder, e.g. checkpoint.dir</param>
    public static void Ensure(string path, string key, TrainConfig config, int rank)
    {
        string probe = Path.Combine(path, ProbeName(rank));
        try
        {
            Directory.CreateDirectory(path);
            using var file = new FileStream(probe, FileMode.Create, FileAccess.Write, FileShare.None);
            file.Write(new byte[4096]);
            file.Flush(flushToDisk: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw Unwritable(path, key, config, e);
        }
        finally
        {
            try { File.Delete(probe); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }   // it was never created
        }
    }

    /// <summary>The error for a folder of the run that cannot be written: its key, its path, the system's reason and the fixes.</summary>
    public static ConfigException Unwritable(string path, string key, TrainConfig config, Exception e)
    {
        var above = Ancestors(path).FirstOrDefault(p => File.Exists(p) || Directory.Exists(p));
        if (above is not null && File.Exists(above))
            return new($"{config.Source}: {key}: cannot create {path}: {above} is a file, not a folder; set {key} to a folder");
        return new($"{config.Source}: {key}: cannot write to {path} ({e.Message}); free space on that disk (`df -h {above ?? "/"}`) or fix its permissions, or set {key} to a writable folder with room");
    }

    /// <summary>The path and every folder above it, nearest first.</summary>
    static IEnumerable<string> Ancestors(string path)
    {
        for (string? p = Path.GetFullPath(path); p is not null; p = Path.GetDirectoryName(p)) yield return p;
    }
}
