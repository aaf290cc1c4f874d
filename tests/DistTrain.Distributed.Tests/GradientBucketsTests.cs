using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Distributed.Tests;

public class GradientBucketsTests
{
    /// <summary>Records each call's element count and adds 1 in place, as a stand-in for a world of 2.</summary>
    sealed class Recording : ICommunicator
    {
        public List<long> Sizes { get; } = [];
        public int Rank => 0;
        public int WorldSize => 2;
        public void AllReduceMean(Tensor flat) { Sizes.Add(flat.numel()); flat.add_(1); }
        public void Broadcast(Tensor flat, int root) { }
        public void Shift(Tensor send, Tensor receive) { }
        public void Barrier() { }
        public void Abort() { }
        public void Dispose() { }
    }

    [Fact]
    public void BucketsAreConsecutiveViewsOfTheBufferOfAtMostTheGivenSize()
    {
        var comm = new Recording();
        using var flat = zeros(10);
        GradientBuckets.AllReduceMean(comm, flat, bucketBytes: 16);   // 4 floats
        Assert.Equal(new long[] { 4, 4, 2 }, comm.Sizes);
        Assert.All(flat.data<float>().ToArray(), v => Assert.Equal(1f, v));   // each element reduced once, in place
    }

    [Fact]
    public void ABucketSmallerThanOneElementStillMovesOneAtATime()
    {
        var comm = new Recording();
        using var flat = zeros(3, ScalarType.Float64);
        GradientBuckets.AllReduceMean(comm, flat, bucketBytes: 1);
        Assert.Equal(new long[] { 1, 1, 1 }, comm.Sizes);
    }

    [Fact]
    public async Task BucketedRingAllReduceIsTheExactMean()
    {
        const int w = 3, n = (1 << 20) + 7;
        static float Value(int rank, int i) => (i * 3L + rank * 11L) % 31 - 15;
        var results = await Ring.RunAsync(w, comm =>
        {
            using var flat = tensor(Enumerable.Range(0, n).Select(i => Value(comm.Rank, i)).ToArray());
            GradientBuckets.AllReduceMean(comm, flat, GradientBuckets.BytesFromMegabytes(0.25));
            return flat.data<float>().ToArray();
        });
        var expected = Enumerable.Range(0, n).Select(i => Enumerable.Range(0, w).Sum(r => (int)Value(r, i)) / (float)w).ToArray();
        Assert.All(results, r => Assert.Equal(expected, r));
    }
}
