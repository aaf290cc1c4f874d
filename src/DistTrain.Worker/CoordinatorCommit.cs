using DistTrain.Checkpoint;
using DistTrain.Protocol.V1;
using DistTrain.Training.Checkpointing;

namespace DistTrain.Worker;

/// <summary>The checkpoint two-phase commit through the coordinator: every rank votes, the vote answers when all have.</summary>
/// <param name="generation">the generation the rank trains in: a vote of an older one is refused</param>
sealed class CoordinatorCommit(Protocol.V1.Coordinator.CoordinatorClient client, int rank, int generation) : ICheckpointCommit
{
    public async Task<CommitDecision> VoteAsync(CheckpointVote vote, CancellationToken ct)
    {
        var request = new CheckpointVoteRequest { Rank = rank, Step = vote.Step, Error = vote.Error ?? "", Generation = generation };
        request.Files.AddRange(vote.Files.Select(f => new CheckpointFile { Name = f.Name, Sha256 = f.Sha256, Bytes = f.Bytes }));
        var reply = await client.CheckpointVoteAsync(request, cancellationToken: ct);
        return new CommitDecision(reply.Commit, reply.Reason, reply.Files.Select(f => new ManifestFile(f.Name, f.Sha256, f.Bytes)).ToList());
    }

    public async Task CompletedAsync(int step, string? dir, string? error, CancellationToken ct) =>
        await client.CheckpointDoneAsync(new CheckpointDoneRequest { Step = step, Path = dir ?? "", Error = error ?? "" }, cancellationToken: ct);
}
