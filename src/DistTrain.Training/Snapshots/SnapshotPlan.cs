using DistTrain.Data;

namespace DistTrain.Training.Snapshots;

/// <summary>
/// What a generation of an elastic job does with in-memory snapshots: take one every <paramref name="Interval"/> steps into
/// <paramref name="Store"/>, agree through <paramref name="Commit"/> that every rank holds its slices, and first restore
/// <paramref name="Restore"/> (null: start as the config or the checkpoint says).
/// </summary>
public sealed record SnapshotPlan(SnapshotStore Store, int Interval, ISnapshotCommit Commit, SnapshotRestore? Restore = null);

/// <summary>
/// The committed snapshot a new generation restores: taken by <paramref name="Generation"/> at <paramref name="Step"/> on
/// <paramref name="WorldSize"/> ranks; slice i (rank i's contiguous part of every flat buffer) is sent by rank Sources[i] of
/// the new generation. The small part comes with it: every data shard's cursor and AdamW's counters.
/// </summary>
public sealed record SnapshotRestore(int Generation, int Step, int WorldSize, IReadOnlyList<int> Sources,
    IReadOnlyDictionary<int, DataCursor> Cursors, (double Steps, long FirstNonFinite) Counters);

/// <summary>One rank holds its slice of the snapshot of <paramref name="Step"/> and its left neighbour's; its data cursors and AdamW's counters.</summary>
public sealed record SnapshotVote(int Step, int Rank, IReadOnlyDictionary<int, DataCursor> Cursors, (double Steps, long FirstNonFinite) Counters);

/// <summary>What taking a snapshot cost this rank: bytes now held in host memory and how long training waited (in all, and for the copies).</summary>
/// <param name="VoteError">why the snapshot does not count (null: every rank holds its slices); the one before it stays the one to restore</param>
public sealed record SnapshotReport(int Step, long Bytes, double StallSeconds, double CopySeconds, string? VoteError = null);

/// <summary>
/// The agreement that a snapshot is complete: every rank votes once it holds its slice and its neighbour's; the vote
/// answers when all have (the coordinator's, in a job). Until then a recovery restores the snapshot before it.
/// </summary>
public interface ISnapshotCommit
{
    /// <summary>True once every rank voted for <see cref="SnapshotVote.Step"/>; false or an exception when the snapshot was abandoned.</summary>
    Task<bool> VoteAsync(SnapshotVote vote, CancellationToken ct);
}
