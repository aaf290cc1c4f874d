using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using DistTrain.Protocol.V1;
using Microsoft.Extensions.Logging;

namespace DistTrain.Coordinator;

/// <summary>The coordinator's ActivitySource (the job span and its straggler events) and Meter (per-rank gauges read from the running job).</summary>
static class CoordinatorDiagnostics
{
    public const string Name = "DistTrain.Coordinator";
    public static readonly ActivitySource Source = new(Name);
    static readonly Meter Meter = new(Name);
    static readonly ConcurrentDictionary<JobState, byte> Jobs = [];

    internal static readonly Counter<long> StragglerEvents =
        Meter.CreateCounter<long>("disttrain.worker.stragglers", "{event}", "times a rank was found to be a straggler");

    static CoordinatorDiagnostics()
    {
        Meter.CreateObservableGauge("disttrain.worker.heartbeat.age", () => PerRank(r => r.SecondsSinceHeartbeat), "s",
            "seconds since each rank's last heartbeat (a stuck rank's grows until heartbeat.timeout_s fails the job)");
        Meter.CreateObservableGauge("disttrain.worker.step", () => PerRank(r => r.Step), "{step}", "each rank's last reported step");
        Meter.CreateObservableGauge("disttrain.worker.compute.duration", () => PerRank(r => r.ComputeSeconds), "s",
            "each rank's mean compute time per step (all but the all-reduce), from its heartbeats");
        Meter.CreateObservableGauge("disttrain.worker.lateness", () => PerRank(r => r.LatenessSeconds), "s",
            "each rank's compute time per step minus the other ranks' median: how long the others wait for it");
    }

    /// <summary>The job's ranks are reported by the gauges while it runs.</summary>
    public static void Watch(JobState job) => Jobs[job] = 0;
    public static void Forget(JobState job) => Jobs.TryRemove(job, out _);

    static IEnumerable<Measurement<double>> PerRank(Func<RankStatus, double> value) =>
        Jobs.Keys.SelectMany(job => job.Status().Ranks.Where(r => !r.Finished).Select(r => new Measurement<double>(value(r),
            new KeyValuePair<string, object?>("disttrain.rank", r.Rank), new KeyValuePair<string, object?>("host.name", r.Host))));
}

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
}
