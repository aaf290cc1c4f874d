using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Distributed.Tests;

public class AllReduceTests
{
    // 1 and 2 are below W for W=3,4; 1001 is not divisible by 2, 3 or 4; (1<<20)+3 spans many 512 KiB segments
    static readonly int[] Sizes = [1, 2, 3, 5, 7, 1000, 1001, (1 << 20) + 3];

    /// <summary>Integer values in [-50, 50]: every partial sum is exact in fp32, so the only rounding is the one division by W.</summary>
    static float Value(int rank, int i) => (i * 7L + rank * 13L) % 101 - 50;

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public async Task IntegerValuedFloat32IsExactlyTheMean(int w)
    {
        var results = await Ring.RunAsync(w, comm => Sizes.Select(n =>
        {
            using var t = tensor(Enumerable.Range(0, n).Select(i => Value(comm.Rank, i)).ToArray());
            comm.AllReduceMean(t);
            return t.data<float>().ToArray();
        }).ToArray());

        for (int s = 0; s < Sizes.Length; s++)
        {
            var expected = Enumerable.Range(0, Sizes[s]).Select(i => Enumerable.Range(0, w).Sum(r => (int)Value(r, i)) / (float)w).ToArray();
            for (int rank = 0; rank < w; rank++) Assert.Equal(expected, results[rank][s]);
        }
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public async Task RandomFloat32IsBitwiseEqualOnEveryRankAndCloseToTheDoubleMean(int w)
    {
        const int n = 100_003;
        var inputs = Enumerable.Range(0, w).Select(r => { var g = new Random(r); return Enumerable.Range(0, n).Select(_ => g.NextSingle() * 2 - 1).ToArray(); }).ToArray();
        var results = await Ring.RunAsync(w, comm =>
        {
            using var t = tensor(inputs[comm.Rank]);
            comm.AllReduceMean(t);
            return t.data<float>().ToArray();
        });

        for (int rank = 1; rank < w; rank++)
            Assert.True(Bits(results[0]).SequenceEqual(Bits(results[rank])), $"rank {rank} differs from rank 0");
        double worst = Enumerable.Range(0, n).Max(i => Math.Abs(results[0][i] - inputs.Average(x => (double)x[i])));
        Assert.True(worst <= 1e-6, $"max |ring - double mean| = {worst}");
    }

    [Fact]
    public async Task Float64IsBitwiseEqualOnEveryRankAndCloseToTheMean()
    {
        const int w = 3, n = 65_537;
        var inputs = Enumerable.Range(0, w).Select(r => { var g = new Random(10 + r); return Enumerable.Range(0, n).Select(_ => g.NextDouble() * 2 - 1).ToArray(); }).ToArray();
        var results = await Ring.RunAsync(w, comm =>
        {
            using var t = tensor(inputs[comm.Rank]);
            comm.AllReduceMean(t);
            return t.data<double>().ToArray();
        });

        for (int rank = 1; rank < w; rank++) Assert.Equal(results[0], results[rank]);
        double worst = Enumerable.Range(0, n).Max(i => Math.Abs(results[0][i] - inputs.Average(x => x[i])));
        Assert.True(worst <= 1e-15, $"max |ring - mean| = {worst}");
    }

    [Fact]
    public async Task Bfloat16IsReducedInFloat32AndRoundedOnce()
    {
        const int w = 3, n = 1001;
        static float Small(int r, int i) => (i * 5 + r * 3) % 17 - 8;   // exact in bf16
        var results = await Ring.RunAsync(w, comm =>
        {
            using var f = tensor(Enumerable.Range(0, n).Select(i => Small(comm.Rank, i)).ToArray());
            using var t = f.to_type(ScalarType.BFloat16);
            comm.AllReduceMean(t);
            Assert.Equal(ScalarType.BFloat16, t.dtype);
            using var back = t.to_type(ScalarType.Float32);
            return back.data<float>().ToArray();
        });

        using var mean = tensor(Enumerable.Range(0, n).Select(i => Enumerable.Range(0, w).Sum(r => (int)Small(r, i)) / (float)w).ToArray());
        using var rounded = mean.to_type(ScalarType.BFloat16).to_type(ScalarType.Float32);
        var expected = rounded.data<float>().ToArray();
        for (int rank = 0; rank < w; rank++) Assert.Equal(expected, results[rank]);
        Assert.Contains(expected, v => v != MathF.Round(v));   // some means (k/3) really were rounded
    }

    [Fact]
    public async Task ManyCollectivesInARowStayInStep()
    {
        const int w = 3;
        var sums = await Ring.RunAsync(w, comm =>
        {
            using var t = full(257, (float)comm.Rank);
            for (int i = 0; i < 200; i++) comm.AllReduceMean(t);
            return t.data<float>().ToArray().Distinct().Single();
        });
        Assert.All(sums, s => Assert.Equal(1f, s));   // mean of 0,1,2; a fixed point afterwards
    }

    [Fact]
    public void WorldSizeOneIsTheIdentityAndOpensNoSocket()
    {
        using var comm = RingCommunicator.Connect(0, 1, LoopbackPorts.Pick(1), "solo", Ring.Token, TimeSpan.FromSeconds(1));
        using var t = tensor(new[] { 1f, 2f, 3f });
        comm.AllReduceMean(t);
        comm.Broadcast(t, 0);
        comm.Barrier();
        Assert.Equal(new[] { 1f, 2f, 3f }, t.data<float>().ToArray());
    }

    [Fact]
    public void UnsupportedTensorsAreRefusedWithTheFix()
    {
        using var comm = RingCommunicator.Connect(0, 1, LoopbackPorts.Pick(1), "solo", Ring.Token, TimeSpan.FromSeconds(1));
        using var ints = zeros(4, ScalarType.Int64);
        Assert.Contains("float32, float64, bfloat16 or float16", Assert.Throws<ArgumentException>(() => comm.AllReduceMean(ints)).Message);
        using var square = zeros(3, 3);
        using var transposed = square.t();
        Assert.Contains(".contiguous()", Assert.Throws<ArgumentException>(() => comm.AllReduceMean(transposed)).Message);
    }

    static IEnumerable<int> Bits(float[] values) => values.Select(BitConverter.SingleToInt32Bits);
}
