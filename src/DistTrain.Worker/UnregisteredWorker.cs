using DistTrain.Training.Cluster;
using DistTrain.Training.Config;
using Grpc.Core;

namespace DistTrain.Worker;

/// <summary>
/// A worker that fails before it registers (its node's config does not load) still tells the coordinator, which
/// stops the job with that error at once rather than waiting heartbeat.rendezvous_timeout_s for this worker.
/// </summary>
public static class UnregisteredWorker
{
    /// <summary>Best effort, bounded: without a coordinator to tell, the worker's own last line says why.</summary>
    public static async Task ReportAsync(ClusterManifest manifest, int nodeRank, int localSlot, Exception error)
    {
        if (nodeRank < 0 || nodeRank >= manifest.Nodes.Count || localSlot < 0 || localSlot >= manifest.Nodes[nodeRank].Slots) return;
        string token;
        try { token = ManifestLoader.ReadToken(manifest); }
        catch (Exception e) when (e is ConfigException or IOException) { return; }
        var client = CoordinatorClient.Create(manifest, token);
        // the coordinator may start a little after its workers: wait for it, but not for long
        var deadline = DateTime.UtcNow.AddSeconds(Math.Min(manifest.ConnectTimeoutSeconds, 15));
        var report = FailureReport.For(manifest.RankOf(nodeRank, localSlot), 0, error, interrupted: false);
        try { await client.FinishAsync(report, new CallOptions(deadline: deadline).WithWaitForReady()); }
        catch (RpcException) { }
    }
}
