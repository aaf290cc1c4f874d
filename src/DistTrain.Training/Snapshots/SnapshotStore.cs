using DistTrain.Training.Checkpointing;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training.Snapshots;

/// <summary>The slices of one snapshot a process holds: which generation and step took it, on how many ranks, and whose slices.</summary>
public sealed record HeldSnapshot(int Generation, int Step, int WorldSize, IReadOnlyList<int> Slices);

/// <summary>
/// A worker's in-memory snapshots, kept for the life of its process so that they outlive a generation (and its Trainer).
/// Two slots of host buffers: the last committed snapshot, and the one being taken. A slot holds this rank's slice of the
/// fp32 master weights and both AdamW moments, and the same of its left neighbour (its buddy copy): 2 × 2 × 12 bytes per
/// parameter / world size, in pinned memory on a GPU. A snapshot becomes the restorable one only once every rank holds
/// both its slices (<see cref="Commit"/>, after the coordinator's vote); until then the committed one is kept.
/// </summary>
public sealed class SnapshotStore : IDisposable
{
    internal static readonly string[] Buffers = ["master", "exp_avg", "exp_avg_sq"];

    /// <summary>One slot: (generation, step, world size), the two slices it holds and their host buffers (by buffer, as <see cref="Buffers"/>).</summary>
    internal sealed class Slot : IDisposable
    {
        public int Generation, Step, WorldSize;
        public int Own = -1, Buddy = -1;
        public Tensor[] OwnBuffers = [], BuddyBuffers = [];
        public bool Committed;

        public long Bytes => OwnBuffers.Concat(BuddyBuffers).Sum(t => t.NumberOfElements * t.ElementSize);

        /// <summary>Host buffers of <paramref name="ownCount"/> and <paramref name="buddyCount"/> fp32 values, reused when the sizes match.</summary>
        public void Fit(long ownCount, long buddyCount, Device device)
        {
            OwnBuffers = Refit(OwnBuffers, ownCount, device);
            BuddyBuffers = Refit(BuddyBuffers, buddyCount, device);
        }

        static Tensor[] Refit(Tensor[] buffers, long count, Device device)
        {
            if (buffers.Length > 0 && buffers[0].NumberOfElements == count) return buffers;
            foreach (var t in buffers) t.Dispose();
            return [.. Buffers.Select(_ => CheckpointSaver.HostBuffer(count, device))];
        }

        public void Dispose()
        {
            foreach (var t in OwnBuffers.Concat(BuddyBuffers)) t.Dispose();
            (OwnBuffers, BuddyBuffers) = ([], []);
        }
    }

    readonly object _lock = new();
    readonly Slot[] _slots = [new(), new()];

    /// <summary>The committed snapshot this process holds slices of; null when none.</summary>
    public HeldSnapshot? Held
    {
        get
        {
            lock (_lock)
                return Committed is { } s ? new HeldSnapshot(s.Generation, s.Step, s.WorldSize, s.Own == s.Buddy ? [s.Own] : [s.Own, s.Buddy]) : null;
        }
    }

    Slot? Committed => _slots.FirstOrDefault(s => s.Committed);

    /// <summary>
    /// Sizes the slots a snapshot may be written into for slices of <paramref name="ownCount"/> and <paramref name="buddyCount"/>
    /// values (pinned on a GPU): the committed one is left as it is, a new generation may still restore it.
    /// </summary>
    public void Prepare(long ownCount, long buddyCount, Device device)
    {
        Slot[] free;
        lock (_lock) free = [.. _slots.Where(s => !s.Committed)];
        foreach (var slot in free) slot.Fit(ownCount, buddyCount, device);
    }

    /// <summary>The slot the next snapshot is written into: never the committed one.</summary>
    internal Slot Free()
    {
        lock (_lock) return _slots.First(s => !s.Committed);
    }

    /// <summary>The snapshot in <paramref name="slot"/> is complete on every rank: it replaces the committed one.</summary>
    internal void Commit(Slot slot)
    {
        lock (_lock)
        {
            foreach (var s in _slots) s.Committed = ReferenceEquals(s, slot);
        }
    }

    /// <summary>The host buffer of <paramref name="slice"/>'s <paramref name="buffer"/> in the committed snapshot of (generation, step).</summary>
    internal Tensor Slice(int generation, int step, int slice, int buffer)
    {
        lock (_lock)
        {
            var s = Committed;
            if (s is null || s.Generation != generation || s.Step != step)
                throw new InvalidOperationException($"the snapshot of generation {generation}, step {step} is not held here" +
                    (s is null ? "" : $" (this process holds generation {s.Generation}, step {s.Step})"));
            if (slice == s.Own) return s.OwnBuffers[buffer];
            if (slice == s.Buddy) return s.BuddyBuffers[buffer];
            throw new InvalidOperationException($"slice {slice} of the snapshot of step {step} is not held here (slices {s.Own} and {s.Buddy} are)");
        }
    }

    public void Dispose()
    {
        foreach (var s in _slots) s.Dispose();
    }
}
