using System.Text.Json;
using DistTrain.Protocol.V1;
using Grpc.Core;

namespace DistTrain.Coordinator;

/// <summary>The in-memory snapshot a recovery may restore: who took it, and the small part of the state it needs besides the slices.</summary>
/// <param name="CursorsJson">every data shard's cursor, {"shard": "cursor json", ...}</param>
sealed record CommittedSnapshot(int Generation, int Step, int WorldSize, string CursorsJson, double AdamSteps, long FirstNonFinite);

/// <summary>
/// The votes on in-memory snapshots (elastic.snapshot_interval) and the last one every rank voted for. A new generation
/// restores it when every slice is still held by a worker that registered (its own rank, or its right neighbour, which holds
/// the buddy copy); with two neighbours lost, or a checkpoint newer than it, the disk checkpoint is restored instead.
/// Not thread-safe: <see cref="JobState"/> calls it under its lock.
/// </summary>
sealed class SnapshotVotes
{
    readonly Dictionary<int, (Dictionary<int, SnapshotVoteRequest> Votes, TaskCompletionSource<SnapshotVoteReply> Reply)> _pending = [];   // by step

    public CommittedSnapshot? Committed { get; set; }

    /// <summary>A rank holds its slices of the snapshot of vote.Step; completes (commit) when all <paramref name="worldSize"/> ranks of the generation did.</summary>
    public Task<SnapshotVoteReply> Vote(SnapshotVoteRequest vote, int generation, int worldSize)
    {
        if (!_pending.TryGetValue(vote.Step, out var snapshot))
            _pending[vote.Step] = snapshot = ([], new TaskCompletionSource<SnapshotVoteReply>(TaskCreationOptions.RunContinuationsAsynchronously));
        if (!snapshot.Votes.TryAdd(vote.Rank, vote))
            throw new RpcException(new Status(StatusCode.AlreadyExists, $"rank {vote.Rank} voted twice for the snapshot of step {vote.Step}"));
        if (snapshot.Votes.Count < worldSize) return snapshot.Reply.Task;
        _pending.Remove(vote.Step);
        var cursors = new SortedDictionary<int, string>();
        foreach (var v in snapshot.Votes.Values)
            foreach (var (shard, cursor) in JsonSerializer.Deserialize<Dictionary<int, string>>(v.CursorsJson) ?? [])
                cursors[shard] = cursor;
        var first = snapshot.Votes[0];
        Committed = new CommittedSnapshot(generation, vote.Step, worldSize, JsonSerializer.Serialize(cursors), first.AdamSteps, first.FirstNonFinite);
        snapshot.Reply.SetResult(new SnapshotVoteReply { Commit = true });
        return snapshot.Reply.Task;
    }

    /// <summary>A new generation opened: the snapshots being voted on are not complete, and never will be.</summary>
    public void Abandon(string reason)
    {
        foreach (var (_, snapshot) in _pending) snapshot.Reply.TrySetException(new RpcException(new Status(StatusCode.Aborted, reason)));
        _pending.Clear();
    }

    /// <summary>
    /// What a new generation of <paramref name="members"/> (by new rank) restores from memory: the committed snapshot when it
    /// is at least as new as the checkpoint of <paramref name="checkpointStep"/> and every slice is held by a member, each sent
    /// by the first member holding it as its own, else as a buddy copy. Null otherwise, with <paramref name="passedOver"/> saying
    /// why when there was a snapshot to consider.
    /// </summary>
    public SnapshotRestore? RestoreFor(IReadOnlyList<RegisterRequest> members, int checkpointStep, out string? passedOver)
    {
        passedOver = null;
        if (Committed is not { } s) return null;
        if (s.Step < checkpointStep)
        {
            passedOver = $"the in-memory snapshot of step {s.Step} is older than the checkpoint of step {checkpointStep}";
            return null;
        }
        var sources = Enumerable.Repeat(-1, s.WorldSize).ToArray();
        // own slices first (the first held): a rank sends what it computed itself before a neighbour's copy of it
        foreach (bool own in new[] { true, false })
            for (int rank = 0; rank < members.Count; rank++)
                if (members[rank].Held is { } held && held.Generation == s.Generation && held.Step == s.Step && held.WorldSize == s.WorldSize)
                    foreach (var slice in own ? held.Slices.Take(1) : held.Slices.Skip(1))
                        if (slice >= 0 && slice < s.WorldSize && sources[slice] < 0) sources[slice] = rank;
        var missing = Enumerable.Range(0, s.WorldSize).Where(i => sources[i] < 0).ToList();
        if (missing.Count > 0)
        {
            passedOver = $"the in-memory snapshot of step {s.Step} lost slice{(missing.Count == 1 ? "" : "s")} {string.Join(", ", missing)} " +
                         "with the workers that held them (a rank and its right neighbour both gone)";
            return null;
        }
        var restore = new SnapshotRestore
        {
            Generation = s.Generation, Step = s.Step, WorldSize = s.WorldSize, CursorsJson = s.CursorsJson, AdamSteps = s.AdamSteps, FirstNonFinite = s.FirstNonFinite,
        };
        restore.Sources.AddRange(sources);
        return restore;
    }
}
