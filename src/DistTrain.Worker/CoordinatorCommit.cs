using System.Text.Json;
using Grpc.Core;
using DistTrain.Checkpoint;
using DistTrain.Protocol.V1;
using DistTrain.Training.Checkpointing;
using DistTrain.Training.Snapshots;
using SnapshotVote = DistTrain.Training.Snapshots.SnapshotVote;

namespace DistTrain.Worker;

/// <summary>The checkpoint two-phase commit (and the in-memory snapshots' vote) through the coordinator: every rank votes, the vote answers when all have.</summary>
/// <param name="generation">the generation the rank trains in: a vote of an older one is refused</param>
/// <param name="coordinatorGrace">an elastic job: seconds a call waits for a coordinator that is being started again; null: none</param>
sealed class CoordinatorCommit(Protocol.V1.Coordinator.CoordinatorClient client, int rank, int generation, double? coordinatorGrace = null) : ICheckpointCommit, ISnapshotCommit
{
    /// <summary>A call that, in an elastic job, waits (up to the grace) for a coordinator that `launch` is starting again.</summary>
    public static CallOptions Options(double? coordinatorGrace, CancellationToken ct) => coordinatorGrace is { } grace
        ? new CallOptions(deadline: DateTime.UtcNow.AddSeconds(grace), cancellationToken: ct).WithWaitForReady()
        : new CallOptions(cancellationToken: ct);

    public async Task<CommitDecision> VoteAsync(CheckpointVote vote, CancellationToken ct)
    {
        var request = new CheckpointVoteRequest { Rank = rank, Step = vote.Step, Error = vote.Error ?? "", Generation = generation };
        request.Files.AddRange(vote.Files.Select(f => new CheckpointFile { Name = f.Name, Sha256 = f.Sha256, Bytes = f.Bytes }));
        // a vote waits for every rank's: no deadline of its own beyond the grace for a restarting coordinator
        var reply = await client.CheckpointVoteAsync(request, coordinatorGrace is null ? new CallOptions(cancellationToken: ct) : new CallOptions(cancellationToken: ct).WithWaitForReady());
        return new CommitDecision(reply.Commit, reply.Reason, reply.Files.Select(f => new ManifestFile(f.Name, f.Sha256, f.Bytes)).ToList());
    }

    public async Task CompletedAsync(int step, string? dir, string? error, CancellationToken ct) =>
        await client.CheckpointDoneAsync(new CheckpointDoneRequest { Step = step, Path = dir ?? "", Error = error ?? "" }, Options(coordinatorGrace, ct));

    public async Task<bool> VoteAsync(SnapshotVote vote, CancellationToken ct)
    {
        var request = new SnapshotVoteRequest
        {
            Rank = rank, Step = vote.Step, Generation = generation, AdamSteps = vote.Counters.Steps, FirstNonFinite = vote.Counters.FirstNonFinite,
            CursorsJson = JsonSerializer.Serialize(vote.Cursors.ToDictionary(c => c.Key.ToString(), c => c.Value.ToJson())),
        };
        var reply = await client.SnapshotVoteAsync(request, coordinatorGrace is null ? new CallOptions(cancellationToken: ct) : new CallOptions(cancellationToken: ct).WithWaitForReady());
        return reply.Commit;
    }
}
