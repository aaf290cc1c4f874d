using System.Text.Json;
using System.Text.Json.Serialization;

namespace DistTrain.Coordinator;

/// <summary>One rank of the current generation, as a restarted coordinator needs it back.</summary>
sealed record PersistedRank(int Rank, int NodeRank, int LocalSlot, string Host, int Pid, string RingEndpoint);

/// <summary>One recovery of an elastic job (a copy of the protocol's Recovery).</summary>
sealed record PersistedRecovery(int Generation, string Cause, int Rank, string Host, int Pid, int FailedAtStep, int RestoredStep, int WorldSize,
    double SecondsToRestart, double SecondsToFirstStep, string? RestoredFrom = null);

/// <summary>What a restarted coordinator carries on from: the run, the generation and its ranks, the last commit, the recoveries, the last snapshot.</summary>
sealed record PersistedJob(string Job, string RunId, string State, int Generation, int WorldSize, IReadOnlyList<PersistedRank> Ranks,
    int CheckpointStep, string CheckpointPath, IReadOnlyList<PersistedRecovery> Recoveries)
{
    /// <summary>The last in-memory snapshot every rank voted for (null: none; an older coordinator's file has none).</summary>
    public CommittedSnapshot? Snapshot { get; init; }
}

/// <summary>
/// An elastic job's coordinator state on disk, {train.run_dir}/coordinator-{job}.json, replaced atomically (written to a
/// temporary file, fsynced, renamed) at every change: the ranks a generation started with, a committed checkpoint, a
/// recovery, the end. `launch` restarts a coordinator that died; the new one reads this and the workers carry on with it.
/// </summary>
static class JobStateFile
{
    static readonly JsonSerializerOptions Json = new() { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.Never };

    public static string PathFor(string runDir, string job) => Path.Combine(Path.GetFullPath(runDir), $"coordinator-{job}.json");

    public static void Write(string path, PersistedJob job)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var temporary = path + ".tmp";
        using (var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            JsonSerializer.Serialize(stream, job, Json);
            stream.Flush(flushToDisk: true);
        }
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>The state a job left behind when it is still to be carried on (running or recovering); null otherwise (none, finished, failed).</summary>
    public static PersistedJob? ReadUnfinished(string path)
    {
        if (!File.Exists(path)) return null;
        PersistedJob? job;
        try { job = JsonSerializer.Deserialize<PersistedJob>(File.ReadAllText(path), Json); }
        catch (JsonException e) { throw new IOException($"{path}: not a coordinator state file ({e.Message}); remove it to start the job afresh", e); }
        return job is { State: "Running" or "Recovering" or "Stopping" } ? job : null;
    }
}
