using System.Diagnostics;
using DistTrain.Data;
using DistTrain.Distributed;
using DistTrain.Training.Checkpointing;
using DistTrain.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training.Snapshots;

/// <summary>
/// In-memory snapshots for one generation (Gemini's and torchft's idea: a lost rank's state survives in a peer's RAM).
/// <see cref="Take"/> copies this rank's slice of the fp32 master weights and both AdamW moments (the slices a sharded
/// checkpoint writes) to host memory and sends it to the right neighbour, receiving the left one's (a ring of buddies),
/// then votes; the vote's answer is collected at the next snapshot, so training waits only for the copies and the shift.
/// <see cref="Restore"/> rebuilds the full state on a new generation from whichever ranks hold each slice.
/// </summary>
public sealed class BuddySnapshots : IDisposable
{
    static readonly TimeSpan SettleWait = TimeSpan.FromSeconds(5);

    readonly SnapshotPlan _plan;
    readonly ICommunicator _comm;
    readonly int _generation;
    (SnapshotStore.Slot Slot, Task<bool> Vote)? _pending;

    public BuddySnapshots(SnapshotPlan plan, ICommunicator comm, int generation)
    {
        if (plan.Interval <= 0) throw new ArgumentOutOfRangeException(nameof(plan), plan.Interval, "the snapshot interval must be positive");
        (_plan, _comm, _generation) = (plan, comm, generation);
    }

    public int Interval => _plan.Interval;

    /// <summary>Whether step <paramref name="step"/> (finished steps) takes a snapshot.</summary>
    public bool Due(int step) => step % _plan.Interval == 0;

    /// <summary>
    /// The snapshot of <paramref name="step"/> (finished steps): a collective, every rank calls it after the same step. The
    /// previous snapshot becomes the committed one here if every rank voted for it.
    /// </summary>
    public SnapshotReport Take(int step, FlatParameters flat, FlatAdamW optimizer, IReadOnlyDictionary<int, DataCursor> cursors, CancellationToken ct)
    {
        var started = Stopwatch.GetTimestamp();
        string? voteError = Settle(Timeout.InfiniteTimeSpan);
        var slot = _plan.Store.Free();
        int rank = _comm.Rank, world = _comm.WorldSize, left = (rank - 1 + world) % world;
        var (start, count) = TrainingCheckpoint.Slice(flat.Count, rank, world);
        var (_, leftCount) = TrainingCheckpoint.Slice(flat.Count, left, world);
        (slot.Generation, slot.Step, slot.WorldSize, slot.Own, slot.Buddy) = (_generation, step, world, rank, left);
        var device = flat.Master.device;
        slot.Fit(count, leftCount, device);
        Tensor[] sources = [flat.Master, optimizer.ExpAvg, optimizer.ExpAvgSq];
        // between steps, outside the step's dispose scope: this one keeps each view alive while copy_ and the shift read it
        using (no_grad())
        using (NewDisposeScope())
        {
            for (int b = 0; b < sources.Length; b++)
            {
                var mine = sources[b].narrow(0, start, count);
                slot.OwnBuffers[b].copy_(mine);
                if (device.type == DeviceType.CPU)
                {
                    _comm.Shift(mine, slot.BuddyBuffers[b]);
                    continue;
                }
                // NCCL moves device memory: the neighbour's slice lands on the device first, then in host memory
                var landed = empty(leftCount, ScalarType.Float32, device);
                _comm.Shift(mine, landed);
                slot.BuddyBuffers[b].copy_(landed);
            }
        }
        var stall = Stopwatch.GetElapsedTime(started).TotalSeconds;
        var vote = new SnapshotVote(step, rank, cursors.ToDictionary(c => c.Key, c => c.Value), optimizer.Counters);
        _pending = (slot, _plan.Commit.VoteAsync(vote, ct));
        return new SnapshotReport(step, slot.Bytes, stall, voteError);
    }

    /// <summary>
    /// Waits (up to <paramref name="wait"/>) for the last vote: when every rank voted, its snapshot becomes the committed
    /// one. Returns why it did not (null: it did, or none was pending).
    /// </summary>
    string? Settle(TimeSpan wait)
    {
        if (_pending is not var (slot, vote)) return null;
        _pending = null;
        try
        {
            if (!vote.Wait(wait)) return $"the vote for the snapshot of step {slot.Step} did not answer within {wait.TotalSeconds:0} s";
            if (!vote.Result) return $"the snapshot of step {slot.Step} was abandoned";
            _plan.Store.Commit(slot);
            return null;
        }
        catch (AggregateException e)
        {
            // the coordinator abandoned it (a new generation) or could not be reached: the snapshot before it stays the one to restore
            return $"the vote for the snapshot of step {slot.Step} failed: {e.InnerException?.Message ?? e.Message}";
        }
    }

    /// <summary>
    /// Every rank of a new generation: the full master weights and moments of the snapshot, slice by slice broadcast from the
    /// rank that holds it (its own or its buddy copy), and AdamW's counters. Returns the snapshot's step.
    /// </summary>
    public int Restore(SnapshotRestore snapshot, FlatParameters flat, FlatAdamW optimizer)
    {
        if (snapshot.Sources.Count != snapshot.WorldSize)
            throw new ArgumentException($"the snapshot of step {snapshot.Step} has {snapshot.WorldSize} slices but names {snapshot.Sources.Count} sources", nameof(snapshot));
        Tensor[] targets = [flat.Master, optimizer.ExpAvg, optimizer.ExpAvgSq];
        using (no_grad())
        using (NewDisposeScope())
        {
            for (int slice = 0; slice < snapshot.WorldSize; slice++)
            {
                var (start, count) = TrainingCheckpoint.Slice(flat.Count, slice, snapshot.WorldSize);
                int root = snapshot.Sources[slice];
                for (int b = 0; b < targets.Length; b++)
                {
                    var target = targets[b].narrow(0, start, count);
                    if (_comm.Rank == root) target.copy_(_plan.Store.Slice(snapshot.Generation, snapshot.Step, slice, b));
                    _comm.Broadcast(target, root);
                }
            }
        }
        flat.PublishMaster();
        optimizer.Counters = snapshot.Counters;
        return snapshot.Step;
    }

    /// <summary>Collects the last vote's answer (a recovery opening aborts it at once): a snapshot every rank voted for is the one to restore.</summary>
    public void Dispose() => Settle(SettleWait);
}
