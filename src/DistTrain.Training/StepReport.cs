using System.Text.Json;
using System.Text.Json.Serialization;
using DistTrain.Data;
using DistTrain.Training.Checkpointing;

namespace DistTrain.Training;

/// <summary>What one logged step reports (a line of metrics.jsonl).</summary>
public sealed record StepReport(
    [property: JsonPropertyName("step")] int Step,
    [property: JsonPropertyName("loss")] double Loss,
    [property: JsonPropertyName("lr")] double Lr,
    [property: JsonPropertyName("tokens")] long Tokens,
    [property: JsonPropertyName("tokens_per_s")] double TokensPerSecond,
    [property: JsonPropertyName("grad_norm")] double GradNorm,
    [property: JsonPropertyName("data_wait_s")] double DataWaitSeconds,
    [property: JsonPropertyName("step_s")] double StepSeconds,
    [property: JsonPropertyName("val_loss")] double? ValLoss = null)
{
    public static readonly JsonSerializerOptions Json = new()
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        RespectRequiredConstructorParameters = true,   // reading back: a line without "loss" is an error, not a loss of 0
    };
}

/// <summary>The parts of a training step, in order (data, forward and backward repeat per micro-batch; checkpoint only at a save: the host copy).</summary>
public enum StepPhase { DataWait, Forward, Backward, AllReduce, Optimizer, Checkpoint }

/// <summary>Receives progress from the trainer (the CLI draws a bar; tests collect reports).</summary>
public interface ITrainingObserver
{
    /// <summary>Which kernels run and why (train.kernels): the run's first line after the header.</summary>
    void OnKernels(string description) { }
    void OnStart(int totalSteps, string runDirectory) { }
    /// <summary>A resumed run continues its own run directory at <paramref name="step"/>; <paramref name="superseded"/> logged steps past it moved to <paramref name="kept"/>.</summary>
    void OnContinued(string runDirectory, int step, int superseded, string kept) { }
    /// <summary>Training continues from a checkpoint (which, and what was passed over).</summary>
    void OnResume(ResumeReport resume) { }
    void OnStep(int step) { }
    /// <summary>Step <paramref name="step"/> enters <paramref name="phase"/> (the previous phase ends); the step ends at <see cref="OnStep"/>. Called on the hot path: keep it cheap.</summary>
    void OnPhase(int step, StepPhase phase) { }
    /// <summary>A save finished in the background: committed, or failed (<see cref="CheckpointReport.Error"/>).</summary>
    void OnCheckpoint(CheckpointReport report) { }
    /// <summary>An in-memory snapshot was taken (elastic.snapshot_interval): what it holds and how long training waited.</summary>
    void OnSnapshot(Snapshots.SnapshotReport report) { }
    /// <summary>A new generation of an elastic job starts from the peers' in-memory snapshot.</summary>
    void OnSnapshotRestored(Snapshots.SnapshotRestore snapshot) { }
    void OnReport(StepReport report) { }
}

/// <summary>
/// Where a run resumed: the checkpoint and its step, every data shard's cursor, the folders of
/// interrupted saves that were ignored (and what becomes of each), and (with checkpoint.fallback) the
/// newer checkpoints refused and why.
/// </summary>
public sealed record ResumeReport(string Checkpoint, int Step, IReadOnlyDictionary<int, DataCursor> Cursors, IReadOnlyList<IgnoredSave> IgnoredPartial, IReadOnlyList<string> Refused)
{
    /// <summary>The run directory that wrote the checkpoint (its manifest's run_dir; null for a checkpoint that names none).</summary>
    public string? RunDirectory { get; init; }
}

/// <summary>A .tmp-* folder passed over on resume, and its fate: removed by this job's next commit, or left to its owner.</summary>
public sealed record IgnoredSave(string Path, string Fate);

/// <summary>Raised when training cannot go on (non-finite loss, ...), with the step and a hint.</summary>
public sealed class TrainingException(string message) : Exception(message);
