using DistTrain.Protocol.V1;
using DistTrain.Training.Cluster;
using Grpc.Core;

namespace DistTrain.Worker;

/// <summary>
/// `launch`'s view of an elastic job, from the coordinator's status once a second: whether the job is over (a failed worker
/// is then not started again), and which of this node's workers the coordinator gave up on while its process still runs (a
/// hung worker: SIGSTOP, a deadlock), which this kills so that launch starts it again like a crashed one.
/// </summary>
public sealed class RecoveryWatch : IDisposable
{
    readonly CancellationTokenSource _stop = new();
    readonly HashSet<int> _killed = [];
    volatile bool _over;

    /// <param name="host">this node's host as the manifest names it (recoveries name the failed worker's)</param>
    /// <param name="workers">this node's running worker processes</param>
    public RecoveryWatch(ClusterManifest manifest, string host, Func<IReadOnlyList<System.Diagnostics.Process>> workers)
    {
        var client = CoordinatorClient.Create(manifest, ManifestLoader.ReadToken(manifest));
        _ = Task.Run(async () =>
        {
            using var tick = new PeriodicTimer(TimeSpan.FromSeconds(1));
            while (await tick.WaitForNextTickAsync(_stop.Token).ConfigureAwait(false))
            {
                JobStatus status;
                try { status = await client.GetStatusAsync(new StatusRequest(), deadline: DateTime.UtcNow.AddSeconds(5), cancellationToken: _stop.Token); }
                catch (RpcException) { continue; }   // not up yet, or gone: launch sees its own children exit
                if (status.State is JobStatus.Types.State.Finished or JobStatus.Types.State.Failed) _over = true;
                foreach (var r in status.Recoveries.Where(r => r.Host == host && r.Pid > 0 && _killed.Add(r.Pid)))
                    foreach (var p in workers().Where(p => p.Id == r.Pid && !p.HasExited))
                    {
                        Console.Error.WriteLine($"[launch] the coordinator gave up on pid {r.Pid} (generation {r.Generation}: {r.Cause}); killing it so that it starts again");
                        try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                    }
            }
        });
    }

    /// <summary>The job finished or failed: nothing is started again.</summary>
    public bool JobOver => _over;

    public void Dispose()
    {
        _stop.Cancel();
        _stop.Dispose();
    }
}
