using DistTrain.Protocol.V1;
using Grpc.Core;

namespace DistTrain.Coordinator;

/// <summary>
/// Phase 1 of the checkpoint two-phase commit: the ranks' votes by step, answered when every rank voted (commit with every
/// rank's files, or abort naming each rank that failed). Not thread-safe: <see cref="JobState"/> calls it under its lock.
/// </summary>
sealed class CheckpointVotes
{
    readonly Dictionary<int, (Dictionary<int, CheckpointVoteRequest> Votes, TaskCompletionSource<CheckpointVoteReply> Reply)> _pending = [];   // by step

    /// <param name="hostOf">a rank's host, for the reason a save is aborted</param>
    public Task<CheckpointVoteReply> Vote(CheckpointVoteRequest vote, int worldSize, Func<int, string> hostOf)
    {
        if (!_pending.TryGetValue(vote.Step, out var save))
            _pending[vote.Step] = save = ([], new TaskCompletionSource<CheckpointVoteReply>(TaskCreationOptions.RunContinuationsAsynchronously));
        if (!save.Votes.TryAdd(vote.Rank, vote))
            throw new RpcException(new Status(StatusCode.AlreadyExists, $"rank {vote.Rank} voted twice for the checkpoint of step {vote.Step}"));
        if (save.Votes.Count < worldSize) return save.Reply.Task;
        var failed = save.Votes.Values.Where(v => v.Error.Length > 0).OrderBy(v => v.Rank).ToList();
        var reply = new CheckpointVoteReply { Commit = failed.Count == 0 };
        if (reply.Commit) reply.Files.AddRange(save.Votes.Values.OrderBy(v => v.Rank).SelectMany(v => v.Files));
        else reply.Reason = string.Join("; ", failed.Select(v => $"rank {v.Rank} ({hostOf(v.Rank)}): {v.Error}"));
        _pending.Remove(vote.Step);
        save.Reply.SetResult(reply);
        return save.Reply.Task;
    }

    /// <summary>The job failed or a new generation opened: the saves being voted on are abandoned.</summary>
    public void Abandon(string reason)
    {
        foreach (var (_, save) in _pending) save.Reply.TrySetException(new RpcException(new Status(StatusCode.Aborted, reason)));
        _pending.Clear();
    }
}
