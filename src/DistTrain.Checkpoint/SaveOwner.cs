namespace DistTrain.Checkpoint;

/// <summary>
/// Who writes a save: the job (a cluster manifest's job; for one process, train.name) and its run (the run id
/// every rank of the job shares). A save's temporary folder carries both in its name, so the next commit of the
/// same job can remove what an interrupted save of it left, and never touches another job's save in progress.
/// </summary>
public sealed record SaveOwner(string Job, string Run)
{
    public string Job { get; } = Job.Length > 0 ? Job : throw new ArgumentException("a save's job must be named", nameof(Job));
    public string Run { get; } = Run.Length > 0 ? Run : throw new ArgumentException("a save's run must be named", nameof(Run));

    /// <summary>ID@JOB, both percent-escaped: a plain folder-name part whatever the names hold.</summary>
    internal string Tag(string id) => $"{Uri.EscapeDataString(id)}@{Uri.EscapeDataString(Job)}";
}

/// <summary>A .tmp-* folder under a checkpoint root: its step and who wrote it (both null: a folder that names no job, from an older DistTrain).</summary>
public sealed record PartialSave(string Path, long? Step, SaveOwner? Owner);
