using DistTrain.Training.Cluster;
using DistTrain.Protocol.V1;
using Grpc.Core;

namespace DistTrain.Worker;

/// <summary>One rank's progress as the coordinator last heard it.</summary>
public sealed record RankProgress(int Rank, string Host, int Step, long Tokens, double Loss, double SecondsSinceHeartbeat, bool Finished,
    double ComputeSeconds, double LatenessSeconds, bool Straggler);

/// <summary>One failure an elastic job recovered from: the generation it opened and what that cost (-1 / 0: not known yet).</summary>
/// <param name="RestoredFrom">"snapshot" (in memory), "checkpoint" or "start"; empty until the generation started</param>
public sealed record RecoveryRecord(int Generation, string Cause, int FailedAtStep, int RestoredStep, int WorldSize, double SecondsToFirstStep, string RestoredFrom = "");

/// <summary>A job's state as the coordinator reports it (`disttrain status`).</summary>
/// CheckpointStep / CheckpointPath: the last committed checkpoint (0 / "" before the first); CheckpointError: the last failed save.
/// Generation and Recoveries: an elastic job's (elastic.max_restarts = MaxRestarts); SnapshotStep: its last in-memory snapshot (0: none).
public sealed record JobProgress(string Job, string State, int WorldSize, int Registered, string Reason, IReadOnlyList<RankProgress> Ranks,
    int CheckpointStep, string CheckpointPath, string CheckpointError, int Generation = 0, IReadOnlyList<RecoveryRecord>? Recoveries = null, int MaxRestarts = 0,
    int SnapshotStep = 0)
{
    public static async Task<JobProgress> QueryAsync(ClusterManifest manifest, string? address, CancellationToken ct)
    {
        var client = CoordinatorClient.Create(manifest, ManifestLoader.ReadToken(manifest), address);
        JobStatus s;
        try { s = await client.GetStatusAsync(new(), deadline: DateTime.UtcNow.AddSeconds(10), cancellationToken: ct); }
        catch (RpcException e) when (ClientTls.Refusal(e) is { } refused) { throw new WorkerException(refused.Message, e); }
        catch (RpcException e) when (e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded)
        {
            throw new WorkerException($"no coordinator answers at {address ?? manifest.CoordinatorAddress} ({e.StatusCode}: {e.Status.Detail}); is the job running? " +
                $"the address comes from coordinator.host and coordinator.port in {manifest.Source}, or pass --coordinator", e);
        }
        return new JobProgress(s.Job, s.State.ToString().ToLowerInvariant(), s.WorldSize, s.Registered, s.Reason,
            s.Ranks.Select(r => new RankProgress(r.Rank, r.Host, r.Step, r.Tokens, r.Loss, r.SecondsSinceHeartbeat, r.Finished,
                r.ComputeSeconds, r.LatenessSeconds, r.Straggler)).ToList(),
            s.CheckpointStep, s.CheckpointPath, s.CheckpointError, s.Generation,
            s.Recoveries.Select(r => new RecoveryRecord(r.Generation, r.Cause, r.FailedAtStep, r.RestoredStep, r.WorldSize, r.SecondsToFirstStep, r.RestoredFrom)).ToList(),
            s.MaxRestarts, s.SnapshotStep);
    }
}
