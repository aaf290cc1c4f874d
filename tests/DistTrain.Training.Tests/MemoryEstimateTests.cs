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
        // the loss as it was when these were measured: the reference's fp32 copy of each chunk's logits, 2624-row chunks
        var c = TrainConfigLoader.Load(Repo.Config(config), ["train.micro_batch=8", "train.seq_len=2048", "train.precision=bf16",
                                                             "train.kernels=reference", "train.loss_chunk=2624"]);
        var estimate = MemoryEstimate.For(c, 400_000_000, 8).Single(e => e.Policy == policy);
        double gib = estimate.ActivationBytes / (double)(1L << 30);
        Assert.InRange(gib, 0.9 * measuredGib, 1.1 * measuredGib);
        Assert.Equal(400_000_000L * (4 + 2 + 2 + 8), estimate.StateBytes);   // fp32 master, bf16 copy and gradients, two fp32 moments
    }

    [Fact]
    public void TheFusedLossKeepsOneEvenChunkOfLogitsWithoutAnFp32Copy()
    {
        long Activations(string kernels) => MemoryEstimate.For(TrainConfigLoader.Load(Repo.Config("405m-muddformer.yaml"),
            ["train.micro_batch=8", "train.seq_len=2048", "train.precision=bf16", $"train.kernels={kernels}"]), 400_000_000, 8)
            .Single(e => e.Policy == CheckpointKind.None).ActivationBytes;
        // the default 5312-row budget over 8 x 2048 rows: 4 chunks of 4096; the reference adds 4 bytes a logit for its fp32 copy
        Assert.Equal(4096L * 50432 * 4, Activations("reference") - Activations("fused"));
    }
}
