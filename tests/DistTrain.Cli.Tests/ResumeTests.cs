using System.Text.Json;

namespace DistTrain.Cli.Tests;

/// <summary>
/// A resume continues its run's own directory (one metrics curve, superseded lines kept aside), and the run's
/// config.yaml is complete enough to resume from any folder (issue 14, item 1).
/// </summary>
public class ResumeTests
{
    static readonly TimeSpan Limit = TimeSpan.FromMinutes(8);   // each run, on a loaded 2-core machine

    static string[] Tiny(string runs, int steps) =>
    [
        "--config", "configs/tiny-transformerpp.yaml", "--set", $"train.steps={steps}", "--set", "train.log_interval=5",
        "--set", "train.seq_len=32", "--set", "train.micro_batch=4", "--set", "train.eval_interval=0", "--set", "train.eval_batches=1",
        "--set", "optim.warmup_steps=2", "--set", "checkpoint.interval=10", "--set", $"train.run_dir={runs}",
    ];

    static (int Step, double Loss)[] Metrics(string file) =>
        File.ReadLines(file).Select(l => JsonDocument.Parse(l).RootElement)
            .Select(e => (e.GetProperty("step").GetInt32(), e.GetProperty("loss").GetDouble())).ToArray();

    [Fact]
    public void ResumingFromAnEarlierCheckpointAppendsToTheSameRunAndMovesTheSupersededStepsAside()
    {
        using var dir = new TempFolder();
        var runs = Path.Combine(dir.Path, "runs");
        var (code, output) = Disttrain.Run(Limit, ["train", .. Tiny(runs, 20)]);
        Assert.True(code == 0, output);
        var run = Directory.GetDirectories(runs).Single();
        var metrics = Path.Combine(run, "metrics.jsonl");
        var before = Metrics(metrics);
        Assert.Equal([5, 10, 15, 20], before.Select(m => m.Step));
        var configBefore = File.ReadAllText(Path.Combine(run, "config.yaml"));

        // the run logged steps 15 and 20 after its step-10 checkpoint: a resume from step 10 supersedes them
        var step10 = Path.Combine(run, "checkpoints", "step-00000010");
        (code, output) = Disttrain.Run(Limit, ["train", .. Tiny(runs, 20), "--resume", step10]);
        Assert.True(code == 0, output);
        Assert.Equal([run], Directory.GetDirectories(runs));   // no second run directory
        var kept = Path.Combine(run, "resumes", "step-00000010");
        Assert.Contains($"continuing run directory {run} after step 10: metrics.jsonl goes on from there; 2 logged step(s) past step 10", output);
        Assert.Contains($"moved to {kept}", output);

        var after = Metrics(metrics);
        Assert.Equal([5, 10, 15, 20], after.Select(m => m.Step));   // one curve, no step twice
        Assert.Equal(before, after);                                 // the same samples and state: the same losses, bitwise
        Assert.Equal(before[2..], Metrics(Path.Combine(kept, "metrics.jsonl")));
        Assert.Equal(configBefore, File.ReadAllText(Path.Combine(kept, "config.yaml")));
        Assert.Contains($"training loss {after[2].Loss:F4} (steps 11-15, resumed at step 10) -> {after[3].Loss:F4} (steps 16-20)", output);
    }

    [Fact]
    public void AStoppedRunResumesFromItsOwnConfigYamlInAnotherFolder()
    {
        using var dir = new TempFolder();
        var runs = Path.Combine(dir.Path, "runs");
        var (process, output) = Disttrain.Start(["train", .. Tiny(runs, 2000)]);
        int step;
        using (process)
        {
            StopTests.WaitFor(process, output, "step     10 ");
            StopTests.Signal(process.Id, "INT");
            StopTests.Finish(process, output);
            var text = StopTests.Text(output);
            Assert.True(process.ExitCode == 130, $"exit {process.ExitCode}:\n{text}");
            step = int.Parse(StopTests.StoppedLine().Match(text).Groups[2].Value);
        }
        var run = Directory.GetDirectories(runs).Single();
        var config = File.ReadAllText(Path.Combine(run, "config.yaml"));
        foreach (var key in new[] { "  steps: 2000", "  warmup_steps: 2", "  beta2: 0.95", "  keep: 3", "  trace_every: 10", $"  run_dir: {runs}",
                     $"  train: {Path.Combine(Disttrain.RepoRoot, "configs", "corpus", "kjv", "train")}" })
            Assert.Contains(key + "\n", config);   // defaults filled in, paths absolute

        // from a folder where no relative path of the original config resolves
        var elsewhere = Directory.CreateDirectory(Path.Combine(dir.Path, "elsewhere")).FullName;
        var (code, resumed) = Disttrain.RunIn(elsewhere, Limit, ["train", "--config", Path.Combine(run, "config.yaml"), "--resume", "latest", "--set", $"train.steps={step + 5}"]);
        Assert.True(code == 0, resumed);
        Assert.Contains($"resuming from {Path.Combine(run, "checkpoints", $"step-{step:D8}")} at step {step}", resumed);
        Assert.Equal([run], Directory.GetDirectories(runs));
        Assert.Empty(Directory.GetFileSystemEntries(elsewhere));   // nothing written into the current folder
        var steps = Metrics(Path.Combine(run, "metrics.jsonl")).Select(m => m.Step).ToList();
        Assert.Equal(steps.Distinct().Order(), steps);              // one curve, increasing
        Assert.Equal(step + 5, steps[^1]);
        Assert.Contains(step, steps);                                // the stopped step's line stays
    }
}
