using DistTrain.Model;
using DistTrain.Training.Config;
using DistTrain.Training.Diagnostics;

namespace DistTrain.Training.Tests;

/// <summary>--dry-run's memory estimate against the activation memory measured on an H100 (docs/benchmarks.md, 405M, chunked loss).</summary>
public class MemoryEstimateTests
{
    [Theory]
    [InlineData("405m-transformerpp.yaml", CheckpointKind.None, 20.31)]
    [InlineData("405m-transformerpp.yaml", CheckpointKind.Block, 6.67)]
    [InlineData("405m-muddformer.yaml", CheckpointKind.None, 35.19)]
    [InlineData("405m-muddformer.yaml", CheckpointKind.Block, 8.86)]
    [InlineData("405m-muddformer.yaml", CheckpointKind.Mudd, 6.92)]
    public void ActivationsOfThe405mRunsAreWithin10PercentOfTheMeasuredOnes(string config, CheckpointKind policy, double measuredGib)
    {
        var c = TrainConfigLoader.Load(Repo.Config(config), ["train.micro_batch=8", "train.seq_len=2048", "train.precision=bf16"]);
        var estimate = MemoryEstimate.For(c, 400_000_000, 8).Single(e => e.Policy == policy);
        double gib = estimate.ActivationBytes / (double)(1L << 30);
        Assert.InRange(gib, 0.9 * measuredGib, 1.1 * measuredGib);
        Assert.Equal(400_000_000L * (4 + 2 + 2 + 8), estimate.StateBytes);   // fp32 master, bf16 copy and gradients, two fp32 moments
    }
}
