using System.Text.Json;
using DistTrain.Training.Config;

namespace DistTrain.Training.Tests;

/// <summary>An elastic job's later generation in the job's run directory: the ledger keeps every generation's lines, each marked.</summary>
public class GenerationRunDirectoryTests
{
    static TrainConfig Tiny(TempDir runs, params string[] overrides) =>
        TrainConfigLoader.Load(Repo.Config("tiny-muddformer.yaml"),
            ["train.micro_batch=4", "train.seq_len=32", "train.log_interval=1", "train.eval_interval=0", "train.eval_batches=1",
             "train.ledger=true", $"train.run_dir={runs.Path}", .. overrides]);

    static List<(int Step, int Generation)> Ledger(string run) =>
        File.ReadLines(Path.Combine(run, "ledger-rank0.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .Select(e => (e.GetProperty("step").GetInt32(), e.GetProperty("generation").GetInt32())).ToList();

    [Fact]
    public void ALaterGenerationAppendsToTheLedgerFromTheCheckpointItRestores()
    {
        using var runs = new TempDir();
        string run;
        using (var first = new Trainer(Tiny(runs, "train.steps=5", "checkpoint.interval=2"), runId: "job-1")) run = first.Run().RunDirectory;
        var checkpoint = Path.Combine(run, "checkpoints", "step-00000002");
        using (var second = new Trainer(Tiny(runs, "train.steps=5", "checkpoint.interval=2", $"checkpoint.resume={checkpoint}"), runId: "job-1", generation: 1))
            Assert.Equal(run, second.Run().RunDirectory);
        Assert.Equal([(1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (3, 1), (4, 1), (5, 1)], Ledger(run));
        // the metrics are one curve: the lines past the restored step moved aside
        Assert.Equal([1, 2, 3, 4, 5], File.ReadLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt32()));
    }

    [Fact]
    public void ALaterGenerationWithoutACheckpointStartsAgainInTheSameFolder()
    {
        using var runs = new TempDir();
        string run;
        using (var first = new Trainer(Tiny(runs, "train.steps=2", "checkpoint.interval=0"), runId: "job-2")) run = first.Run().RunDirectory;
        using (var second = new Trainer(Tiny(runs, "train.steps=2", "checkpoint.interval=0"), runId: "job-2", generation: 2))
            Assert.Equal(run, second.Run().RunDirectory);
        Assert.Equal([(1, 0), (2, 0), (1, 2), (2, 2)], Ledger(run));
        Assert.Equal(2, File.ReadLines(Path.Combine(run, "metrics.jsonl")).Count());
    }
}
