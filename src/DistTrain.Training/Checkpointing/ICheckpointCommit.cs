using DistTrain.Checkpoint;

namespace DistTrain.Training.Checkpointing;

/// <summary>One rank's phase-1 vote: its files of the save of <paramref name="Step"/> are durable (or <paramref name="Error"/> says why not).</summary>
public sealed record CheckpointVote(int Step, int Rank, IReadOnlyList<ManifestFile> Files, string? Error);

/// <summary>The outcome of phase 1: commit with every rank's files, or abort with the first failure.</summary>
public sealed record CommitDecision(bool Commit, string Reason, IReadOnlyList<ManifestFile> Files);

/// <summary>
/// The two-phase commit of a sharded save. Every rank votes once its files are written and
/// fsynced; the vote answers when all ranks have voted. Rank 0 then writes the manifest, renames
/// the folder and moves "latest", and reports the outcome. In a job the coordinator runs this; a
/// single process commits alone (<see cref="SingleRankCommit"/>). It runs beside training, off the
/// communicator, so a save never blocks a collective.
/// </summary>
public interface ICheckpointCommit
{
    Task<CommitDecision> VoteAsync(CheckpointVote vote, CancellationToken ct);

    /// <summary>Phase 2, rank 0: the checkpoint of <paramref name="step"/> is committed at <paramref name="dir"/>, or was given up (<paramref name="error"/>).</summary>
    Task CompletedAsync(int step, string? dir, string? error, CancellationToken ct);
}

/// <summary>World size 1: its own vote decides.</summary>
public sealed class SingleRankCommit : ICheckpointCommit
{
    public Task<CommitDecision> VoteAsync(CheckpointVote vote, CancellationToken ct) =>
        Task.FromResult(new CommitDecision(vote.Error is null, vote.Error is null ? "" : $"rank 0: {vote.Error}", vote.Files));

    public Task CompletedAsync(int step, string? dir, string? error, CancellationToken ct) => Task.CompletedTask;
}
