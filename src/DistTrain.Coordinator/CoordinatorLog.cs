using Microsoft.Extensions.Logging;

namespace DistTrain.Coordinator;

/// <summary>The coordinator's log lines (source-generated; exported with the active trace when logs are exported).</summary>
static partial class CoordinatorLog
{
    [LoggerMessage(1, LogLevel.Information, "job {Job}: rank {Rank} registered from {Host} (pid {Pid})")]
    public static partial void Registered(ILogger logger, string job, int rank, string host, int pid);

    [LoggerMessage(2, LogLevel.Information, "job {Job}: all {WorldSize} ranks registered; training starts")]
    public static partial void Started(ILogger logger, string job, int worldSize);

    [LoggerMessage(3, LogLevel.Warning, "job {Job}: rank {Rank} on {Host} is a straggler: {ComputeSeconds:F3} s of compute per step, {Ratio:F2}x the other ranks' median {MedianSeconds:F3} s, for {ForSeconds:F0} s; every step waits {LatenessSeconds:F3} s for it")]
    public static partial void Straggler(ILogger logger, string job, int rank, string host, double computeSeconds, double ratio, double medianSeconds, double forSeconds, double latenessSeconds);

    [LoggerMessage(4, LogLevel.Information, "job {Job}: rank {Rank} on {Host} is no longer a straggler ({Ratio:F2}x the median)")]
    public static partial void Recovered(ILogger logger, string job, int rank, string host, double ratio);

    [LoggerMessage(5, LogLevel.Information, "job {Job}: checkpoint of step {Step} committed at {Path}")]
    public static partial void CheckpointCommitted(ILogger logger, string job, int step, string path);

    [LoggerMessage(6, LogLevel.Warning, "job {Job}: checkpoint of step {Step} failed: {Error}")]
    public static partial void CheckpointFailed(ILogger logger, string job, int step, string error);

    [LoggerMessage(7, LogLevel.Error, "job {Job} failed: {Reason}")]
    public static partial void Failed(ILogger logger, string job, string reason);

    [LoggerMessage(8, LogLevel.Information, "job {Job} finished: every rank completed")]
    public static partial void Finished(ILogger logger, string job);

    [LoggerMessage(9, LogLevel.Warning, "job {Job}: the worker of node {NodeRank} slot {LocalSlot} ({Host}, pid {Pid}) went away before the job started; its slot is free for a restarted worker")]
    public static partial void Abandoned(ILogger logger, string job, int nodeRank, int localSlot, string host, int pid);

    [LoggerMessage(10, LogLevel.Warning, "job {Job}: {From} asks for a graceful stop (exit code {ExitCode}); every rank stops after the same step with a checkpoint")]
    public static partial void StopRequested(ILogger logger, string job, string from, int exitCode);

    [LoggerMessage(11, LogLevel.Information, "job {Job}: every rank acknowledged the stop; they stop after step {Step}")]
    public static partial void StopAgreed(ILogger logger, string job, int step);

    [LoggerMessage(12, LogLevel.Warning, "job {Job} stopped gracefully after step {Step}; checkpoint {Checkpoint}")]
    public static partial void StoppedGracefully(ILogger logger, string job, int step, string checkpoint);

    [LoggerMessage(13, LogLevel.Warning, "job {Job}: recovering (generation {Generation}, restart {Restart} of {MaxRestarts}): {Cause}; the survivors keep their processes and register again")]
    public static partial void Recovering(ILogger logger, string job, int generation, int restart, int maxRestarts, string cause);

    [LoggerMessage(14, LogLevel.Warning, "job {Job}: generation {Generation} starts with {WorldSize} of {Listed} workers, {Restored}, {Seconds:F1} s after the failure")]
    public static partial void GenerationStarted(ILogger logger, string job, int generation, int worldSize, int listed, string restored, double seconds);

    [LoggerMessage(15, LogLevel.Warning, "job {Job}: recovered: generation {Generation} finished step {Step}, {Seconds:F1} s after the failure; {Lost} steps trained again")]
    public static partial void RecoveredFromFailure(ILogger logger, string job, int generation, int step, double seconds, int lost);

    [LoggerMessage(16, LogLevel.Information, "job {Job}: node {NodeRank} slot {LocalSlot} ({Host}) is back; it joins at the next committed checkpoint")]
    public static partial void Rejoining(ILogger logger, string job, int nodeRank, int localSlot, string host);

    [LoggerMessage(17, LogLevel.Warning, "job {Job}: coordinator restarted; carrying on with generation {Generation} ({State}, {WorldSize} ranks, last checkpoint step {CheckpointStep}): the workers reconnect")]
    public static partial void Restored(ILogger logger, string job, int generation, string state, int worldSize, int checkpointStep);

    [LoggerMessage(18, LogLevel.Warning, "job {Job} finished: {What}")]
    public static partial void FinishedDespite(ILogger logger, string job, string what);

    [LoggerMessage(19, LogLevel.Warning, "job {Job}: the coordinator's state file could not be written ({Error}); a coordinator started again would not know the last snapshot")]
    public static partial void StateNotWritten(ILogger logger, string job, string error);
}
