using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using DistTrain.Protocol.V1;

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

    internal static readonly Counter<long> Restarts =
        Meter.CreateCounter<long>("disttrain.job.restarts", "{generation}", "recoveries from a lost, hung or failed worker (each opens a generation)");

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
