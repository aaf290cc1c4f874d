using System.Diagnostics;
using Microsoft.Extensions.Logging;

namespace DistTrain.Worker;

/// <summary>The worker's ActivitySource (the "worker" span: everything a rank does hangs under it) and its log lines.</summary>
static partial class WorkerDiagnostics
{
    public const string Name = "DistTrain.Worker";
    public static readonly ActivitySource Source = new(Name);

    [LoggerMessage(1, LogLevel.Information, "job {Job}: joined as rank {Rank} of {WorldSize} ({Backend}, device {Device}); run {Run}")]
    public static partial void Joined(ILogger logger, string job, int rank, int worldSize, string backend, string device, string run);

    [LoggerMessage(2, LogLevel.Information, "job {Job}: rank {Rank} finished at step {Step}")]
    public static partial void Finished(ILogger logger, string job, int rank, int step);

    [LoggerMessage(3, LogLevel.Error, "job {Job}: rank {Rank} stopped at step {Step}: {Reason}")]
    public static partial void Stopped(ILogger logger, string job, int rank, int step, string reason);

    [LoggerMessage(4, LogLevel.Error, "job {Job}: rank {Rank} got a stop signal but could not ask the coordinator to stop the job ({Detail}); a second signal ends this worker at once")]
    public static partial void StopNotDelivered(ILogger logger, string job, int rank, string detail);

    [LoggerMessage(5, LogLevel.Warning, "job {Job}: rank {Rank} leaves generation {Old} at step {Step} and registers for generation {Generation}: {Cause}")]
    public static partial void Regenerating(ILogger logger, string job, int rank, int old, int step, int generation, string cause);

    [LoggerMessage(6, LogLevel.Information, "job {Job}: finished without this worker (node {NodeRank} slot {LocalSlot}); nothing left to do")]
    public static partial void FinishedWithout(ILogger logger, string job, int nodeRank, int localSlot);

    [LoggerMessage(7, LogLevel.Information, "job {Job}: rank {Rank} took the in-memory snapshot of step {Step}: {Megabytes:F1} MB held (its slice and its neighbour's), training waited {Seconds:F3} s")]
    public static partial void SnapshotTaken(ILogger logger, string job, int rank, int step, double megabytes, double seconds);

    [LoggerMessage(8, LogLevel.Warning, "job {Job}: rank {Rank}: {Reason}; a recovery restores the snapshot before it")]
    public static partial void SnapshotNotCommitted(ILogger logger, string job, int rank, string reason);

    [LoggerMessage(9, LogLevel.Information, "job {Job}: rank {Rank} restored the in-memory snapshot of step {Step} (generation {Generation}'s, {Slices} slices from the workers' memory)")]
    public static partial void SnapshotRestored(ILogger logger, string job, int rank, int step, int generation, int slices);
}
