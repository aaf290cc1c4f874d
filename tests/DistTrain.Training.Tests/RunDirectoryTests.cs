using DistTrain.Training.Config;

namespace DistTrain.Training.Tests;

/// <summary>A resumed run continuing its folder: which lines stay, which move aside, nothing lost.</summary>
public class RunDirectoryTests
{
    static string Line(int step, double loss) => System.Text.Json.JsonSerializer.Serialize(new StepReport(step, loss, 0, 0, 0, 0, 0, 0), StepReport.Json);

    [Fact]
    public void ContinuingAtStep10KeepsStepsUpTo10AndMovesTheRestAndTheOldConfigToResumes()
    {
        using var dir = new TempDir();
        var c = TrainConfigLoader.Load(Repo.Config("tiny-muddformer.yaml"), [$"train.run_dir={dir.Path}"]);
        var run = Directory.CreateDirectory(Path.Combine(dir.Path, "tiny-muddformer-1")).FullName;
        File.WriteAllLines(Path.Combine(run, "metrics.jsonl"), [Line(5, 1), Line(10, 2), Line(15, 3), "{\"step\":2"]);
        File.WriteAllLines(Path.Combine(run, "ledger-rank0.jsonl"), ["{\"step\":10,\"windows\":[]}", "{\"step\":11,\"windows\":[]}"]);
        File.WriteAllLines(Path.Combine(run, "ledger-rank3.jsonl"), ["{\"step\":12,\"windows\":[]}"]);   // a rank the resumed job does not have
        File.WriteAllText(Path.Combine(run, "config.yaml"), "old");

        Assert.Equal(run, RunDirectory.Continued(c, run));
        Assert.Null(RunDirectory.Continued(c, Path.Combine(Path.GetTempPath(), "elsewhere")));
        var (folder, superseded) = RunDirectory.Continue(c, run, 10, rank: 0, world: 2);
        using (folder) folder.Append(new StepReport(11, 4, 0, 0, 0, 0, 0, 0));

        var kept = Path.Combine(run, "resumes", "step-00000010");
        Assert.Equal(2, superseded);   // step 15 and the half line
        Assert.Equal([Line(5, 1), Line(10, 2), Line(11, 4)], File.ReadAllLines(Path.Combine(run, "metrics.jsonl")));
        Assert.Equal([5, 10, 11], RunDirectory.ReadMetrics(run).Select(r => r.Step));
        Assert.Equal([Line(15, 3), "{\"step\":2"], File.ReadAllLines(Path.Combine(kept, "metrics.jsonl")));
        Assert.Equal(["{\"step\":10,\"windows\":[]}"], File.ReadAllLines(Path.Combine(run, "ledger-rank0.jsonl")));
        Assert.Equal(["{\"step\":11,\"windows\":[]}"], File.ReadAllLines(Path.Combine(kept, "ledger-rank0.jsonl")));
        Assert.Equal(["{\"step\":12,\"windows\":[]}"], File.ReadAllLines(Path.Combine(kept, "ledger-rank3.jsonl")));
        Assert.Empty(File.ReadAllLines(Path.Combine(run, "ledger-rank3.jsonl")));
        Assert.Equal("old", File.ReadAllText(Path.Combine(kept, "config.yaml")));
        Assert.Contains("  steps: ", File.ReadAllText(Path.Combine(run, "config.yaml")));
        Assert.Empty(Directory.GetFiles(run, "*.resume-tmp"));
    }
}
