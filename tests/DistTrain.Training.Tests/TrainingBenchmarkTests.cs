using DistTrain.Training.Config;
using DistTrain.Training.Diagnostics;

namespace DistTrain.Training.Tests;

public class TrainingBenchmarkTests
{
    static BenchmarkResult Bench(string arch, TempDir runs) =>
        // what `disttrain bench --warmup 1 --steps 2 --profile-steps 1` sets up: 4 steps, the report after the timed ones
        TrainingBenchmark.Run(TrainConfigLoader.Load(Repo.Config($"tiny-{arch}.yaml"),
            ["train.micro_batch=4", "train.seq_len=32", "train.steps=4", "train.log_interval=3", "train.eval_interval=0", "train.eval_batches=0",
             "optim.warmup_steps=0", $"train.run_dir={runs.Path}"]), warmup: 1, timed: 2, profiled: 1, peakFlops: 0, fitMicroBatches: []);

    [Fact]
    public void TheBenchCountsTheHostsWorkPerStepAndOnACpuNoGpuTimeline()
    {
        using var runs = new TempDir();
        var mudd = Bench("muddformer", runs);
        var plain = Bench("transformerpp", runs);
        // the host's operations per step: MUDDFormer's dense connections (a mix and a dynamic-dense MLP per layer) add many
        Assert.True(plain.TensorsPerStep > 50, $"{plain.TensorsPerStep} tensors a Transformer++ step");
        Assert.True(mudd.TensorsPerStep > 1.3 * plain.TensorsPerStep, $"{mudd.TensorsPerStep} against {plain.TensorsPerStep}");
        Assert.Equal(0, mudd.FusedLaunchesPerStep);   // the CPU runs the reference ops
        Assert.Null(mudd.HostLeadMilliseconds);
        Assert.Null(mudd.Timeline);
        Assert.Contains(mudd.Describe(), l => l.StartsWith("host work per timed step: ") && l.Contains(" TorchSharp tensors"));
        Assert.True(mudd.TokensPerSecond > 0);
    }
}
