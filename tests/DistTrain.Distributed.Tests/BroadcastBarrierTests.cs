using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Distributed.Tests;

public class BroadcastBarrierTests
{
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public async Task BroadcastFromRootOneGivesEveryRankItsData(int w)
    {
        int[] sizes = [1, 1001, (1 << 20) + 1];
        float[] Data(int rank, int n) { var g = new Random(100 + rank); return Enumerable.Range(0, n).Select(_ => g.NextSingle()).ToArray(); }
        var results = await Ring.RunAsync(w, comm => sizes.Select(n =>
        {
            using var t = tensor(Data(comm.Rank, n));
            comm.Broadcast(t, root: 1);
            return t.data<float>().ToArray();
        }).ToArray());

        for (int s = 0; s < sizes.Length; s++)
            for (int rank = 0; rank < w; rank++)
                Assert.Equal(Data(1, sizes[s]), results[rank][s]);
    }

    [Fact]
    public async Task BroadcastCopiesBytesOfAnyDtype()
    {
        var results = await Ring.RunAsync(3, comm =>
        {
            using var longs = full(7, comm.Rank * 1_000_000_000_000L + 5, ScalarType.Int64);
            using var halves = full(9, comm.Rank + 0.5f).to_type(ScalarType.BFloat16);
            comm.Broadcast(longs, root: 2);
            comm.Broadcast(halves, root: 0);
            using var wide = halves.to_type(ScalarType.Float32);
            return (longs.data<long>().ToArray(), wide.data<float>().ToArray());
        });
        Assert.All(results, r => Assert.All(r.Item1, v => Assert.Equal(2_000_000_000_005L, v)));
        Assert.All(results, r => Assert.All(r.Item2, v => Assert.Equal(0.5f, v)));
    }

    [Fact]
    public async Task NoRankLeavesABarrierBeforeTheLastHasEntered()
    {
        const int w = 4;
        var clock = Stopwatch.StartNew();
        var times = await Ring.RunAsync(w, comm =>
        {
            var entered = new List<TimeSpan>();
            var left = new List<TimeSpan>();
            for (int round = 0; round < 3; round++)
            {
                Thread.Sleep(100 * ((comm.Rank + round) % w));   // a different straggler each round
                entered.Add(clock.Elapsed);
                comm.Barrier();
                left.Add(clock.Elapsed);
            }
            return (entered, left);
        });

        for (int round = 0; round < 3; round++)
        {
            var lastIn = times.Max(t => t.entered[round]);
            var firstOut = times.Min(t => t.left[round]);
            Assert.True(firstOut >= lastIn, $"round {round}: a rank left at {firstOut} before the last entered at {lastIn}");
        }
    }
}
