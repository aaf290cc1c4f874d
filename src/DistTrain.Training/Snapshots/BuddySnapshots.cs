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
/// then votes and waits for the answer: no rank trains past a snapshot that is not complete everywhere, so a recovery
/// trains again at most one snapshot interval. <see cref="Restore"/> rebuilds the full state on a new generation from
/// whichever ranks hold each slice.
/// </summary>
public sealed class BuddySnapshots : IDisposable
{
    readonly SnapshotPlan _plan;
    readonly ICommunicator _comm;
    readonly int _generation;
    readonly Task _prepared;

    /// <param name="flat">this generation's flat buffers: the host buffers are sized for its slices and pinned in the background
    /// (seconds for gigabytes), so neither a recovery nor the first snapshot waits for it</param>
    public BuddySnapshots(SnapshotPlan plan, ICommunicator comm, int generation, FlatParameters flat)
    {
        if (plan.Interval <= 0) throw new ArgumentOutOfRangeException(nameof(plan), plan.Interval, "the snapshot interval must be positive");
        (_plan, _comm, _generation) = (plan, comm, generation);
        var (count, leftCount, device) = (Mine(flat).Count, Left(flat).Count, flat.Master.device);
        _prepared = Task.Run(() => _plan.Store.Prepare(count, leftCount, device));
    }

    public int Interval => _plan.Interval;

    /// <summary>Whether step <paramref name="step"/> (finished steps) takes a snapshot.</summary>
    public bool Due(int step) => step % _plan.Interval == 0;

    (long Start, long Count) Mine(FlatParameters flat) => TrainingCheckpoint.Slice(flat.Count, _comm.Rank, _comm.WorldSize);
    (long Start, long Count) Left(FlatParameters flat) => TrainingCheckpoint.Slice(flat.Count, (_comm.Rank - 1 + _comm.WorldSize) % _comm.WorldSize, _comm.WorldSize);

    /// <summary>
    /// The snapshot of <paramref name="step"/> (finished steps): a collective, every rank calls it after the same step. Returns
    /// once the coordinator answered the vote; the snapshot is then the one to restore, or (VoteError) the previous one stays.
    /// </summary>
    public SnapshotReport Take(int step, FlatParameters flat, FlatAdamW optimizer, IReadOnlyDictionary<int, DataCursor> cursors, CancellationToken ct)
    {
        var started = Stopwatch.GetTimestamp();
        _prepared.GetAwaiter().GetResult();
        var slot = _plan.Store.Free();
        var ((start, count), (_, leftCount)) = (Mine(flat), Left(flat));
        (slot.Generation, slot.Step, slot.WorldSize, slot.Own, slot.Buddy) = (_generation, step, _comm.WorldSize, _comm.Rank, (_comm.Rank - 1 + _comm.WorldSize) % _comm.WorldSize);
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
        var copied = Stopwatch.GetElapsedTime(started).TotalSeconds;
        string? error = Vote(new SnapshotVote(step, _comm.Rank, cursors.ToDictionary(c => c.Key, c => c.Value), optimizer.Counters), ct);
        if (error is null) _plan.Store.Commit(slot);
        return new SnapshotReport(step, slot.Bytes, Stopwatch.GetElapsedTime(started).TotalSeconds, copied, error);
    }

    /// <summary>The vote's answer: null when every rank holds its slices, else why the snapshot does not count.</summary>
    string? Vote(SnapshotVote vote, CancellationToken ct)
    {
        try
        {
            return _plan.Commit.VoteAsync(vote, ct).GetAwaiter().GetResult() ? null : $"the snapshot of step {vote.Step} was abandoned";
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // the coordinator abandoned it (a new generation opens) or could not be reached: the snapshot before it stays the one to
            // restore; a lost peer also breaks the next collective, which is where the step fails
            return $"the vote for the snapshot of step {vote.Step} failed: {e.Message}";
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

    /// <summary>Lets the background allocation finish: the store's buffers are not freed or resized under it.</summary>
    public void Dispose()
    {
        try { _prepared.Wait(); }
        catch (AggregateException) { }   // out of host memory: the first Take reported it, or nothing needed the buffers
    }
}
