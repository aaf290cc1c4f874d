using DistTrain.Data;
using DistTrain.Distributed;
using DistTrain.Model;
using DistTrain.Training.Config;
using DistTrain.Training.Optim;
using DistTrain.Training.Snapshots;
using static TorchSharp.torch;

namespace DistTrain.Training.Tests;

/// <summary>
/// In-memory snapshots in one process (the ring and the coordinator have their own tests): a snapshot becomes the one to
/// restore only when its vote commits, the committed one is never overwritten by the next, and a restore puts back the values.
/// </summary>
public class BuddySnapshotsTests
{
    static readonly ModelConfig Tiny = new() { Arch = Architecture.MUDDFormer, VocabSize = 40, BlockSize = 16, Dim = 32, NLayer = 3, NHead = 4, IntermediateSize = 256, UseQkNorm = true };
    static readonly OptimOptions Options = new(Lr: 1e-2, MinLrRatio: 0.1, WarmupSteps: 0, WeightDecay: 0.1, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, GradClip: 1);

    /// <summary>Votes whose answers the test sets per step.</summary>
    sealed class SetVotes : ISnapshotCommit
    {
        public readonly Dictionary<int, bool> Answers = [];
        public Task<bool> VoteAsync(SnapshotVote vote, CancellationToken ct) => Task.FromResult(Answers[vote.Step]);
    }

    static void Fill(FlatParameters flat, FlatAdamW optimizer, float value)
    {
        using var _ = no_grad();
        flat.Master.fill_(value);
        optimizer.ExpAvg.fill_(value + 0.25f);
        optimizer.ExpAvgSq.fill_(value + 0.5f);
    }

    [Fact]
    public void OnlyACommittedSnapshotIsHeldAndTheNextNeverOverwritesIt()
    {
        using var model = new LanguageModel(Tiny);
        using var flat = new FlatParameters(model, ScalarType.Float32, CPU);
        using var optimizer = new FlatAdamW(flat, Options);
        using var store = new SnapshotStore();
        var votes = new SetVotes { Answers = { [2] = true, [4] = false, [6] = true } };
        var cursors = new Dictionary<int, DataCursor>();
        using var snapshots = new BuddySnapshots(new SnapshotPlan(store, 2, votes), new LocalCommunicator(), generation: 0, flat);
        Assert.Null(store.Held);

        Fill(flat, optimizer, 1);
        var report = snapshots.Take(2, flat, optimizer, cursors, default);
        Assert.Equal(2 * 3 * flat.Count * 4, report.Bytes);   // its slice and its neighbour's (itself, on one rank), three fp32 buffers
        Assert.Null(report.VoteError);
        var held = store.Held!;
        Assert.Equal((0, 2, 1), (held.Generation, held.Step, held.WorldSize));
        Assert.Equal([0], held.Slices);

        Fill(flat, optimizer, 2);
        Assert.Equal("the snapshot of step 4 was abandoned", snapshots.Take(4, flat, optimizer, cursors, default).VoteError);
        Assert.Equal(2, store.Held!.Step);   // step 4 does not count: step 2 stays the one to restore

        // a new generation restores step 2's values, though step 4 was written since
        using var model2 = new LanguageModel(Tiny);
        using var flat2 = new FlatParameters(model2, ScalarType.Float32, CPU);
        using var optimizer2 = new FlatAdamW(flat2, Options);
        var restore = new SnapshotRestore(0, 2, 1, [0], cursors, (2.0, -1L));
        using (var restorer = new BuddySnapshots(new SnapshotPlan(store, 2, votes, restore), new LocalCommunicator(), generation: 1, flat2))
            Assert.Equal(2, restorer.Restore(restore, flat2, optimizer2));
        Assert.Equal((1f, 1f), (flat2.Master.min().item<float>(), flat2.Master.max().item<float>()));
        Assert.Equal((1.25f, 1.5f), (optimizer2.ExpAvg.max().item<float>(), optimizer2.ExpAvgSq.min().item<float>()));
        Assert.Equal((2.0, -1L), optimizer2.Counters);

        Fill(flat, optimizer, 3);
        Assert.Null(snapshots.Take(6, flat, optimizer, cursors, default).VoteError);
        Assert.Equal(6, store.Held!.Step);
        Assert.Equal(3f, store.Slice(0, 6, 0, 0).max().item<float>());
    }
}
