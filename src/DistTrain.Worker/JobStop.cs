using DistTrain.Protocol.V1;
using DistTrain.Training.Cluster;
using Grpc.Core;

namespace DistTrain.Worker;

/// <summary>Asks a job's coordinator for a graceful stop (`disttrain launch` passing on a signal to the whole job).</summary>
public static class JobStop
{
    /// <returns>null when the stop goes ahead; otherwise why it cannot (unreachable, refused, nothing running)</returns>
    public static async Task<string?> RequestAsync(ClusterManifest manifest, int exitCode, string from)
    {
        var client = CoordinatorClient.Create(manifest, ManifestLoader.ReadToken(manifest));
        try
        {
            var reply = await client.RequestStopAsync(new StopJobRequest { Rank = -1, ExitCode = exitCode, From = from }, deadline: DateTime.UtcNow.AddSeconds(10));
            return reply.State is JobStatus.Types.State.Running or JobStatus.Types.State.Stopping or JobStatus.Types.State.Waiting
                ? null : $"the job is already {reply.State.ToString().ToLowerInvariant()}";
        }
        catch (RpcException e) { return $"the coordinator at {manifest.CoordinatorAddress} did not take the stop ({e.StatusCode}: {e.Status.Detail})"; }
    }
}
