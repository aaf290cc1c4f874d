using static DistTrain.Cli.Tests.CheckpointTests;

namespace DistTrain.Cli.Tests;

/// <summary>
/// What an interrupted save leaves (a .tmp-* folder) belongs to its job: the job's next commit removes it, as the
/// resume line says; another job's, in the same checkpoint folder, is left alone.
/// </summary>
public class InterruptedSaveTests
{
    const string Fault = "DISTTRAIN_FAULT_CHECKPOINT";

    [Fact]
    public void ThisJobsNextCommitRemovesItsInterruptedSaveAndLeavesAnotherJobsAlone()
    {
        using var dir = new TempFolder();
        var root = Path.Combine(dir.Path, "ckpt-full");
        string[] args = [.. Args(dir.Path, "full", 1), "--set", "checkpoint.interval=5", "--set", "train.name=ours"];

        // our job commits steps 5 and 10 and is killed in the save of step 15 (shards written, no vote)
        var (killed, killedOutput) = Disttrain.Run(Limit, ["train", .. args], (Fault, "after-shards@15"));
        Assert.True(killed != 0, killedOutput);
        var ours = Assert.Single(Directory.GetDirectories(root, ".tmp-*"));
        Assert.Matches(@"/\.tmp-step-00000015-ours-\d{8}-\d{6}@ours$", ours);
        // another job, same checkpoint folder, killed in its first save (step 5: at or below our next commit's step)
        var (other, otherOutput) = Disttrain.Run(Limit, ["train", .. args, "--set", "train.name=theirs", "--set", $"train.run_dir={Path.Combine(dir.Path, "theirs")}"],
            (Fault, "after-shards@5"));
        Assert.True(other != 0, otherOutput);
        var theirs = Assert.Single(Directory.GetDirectories(root, ".tmp-*@theirs"));
        Assert.Equal("step-00000010", File.ReadAllText(Path.Combine(root, "latest")).Trim());   // theirs never committed

        // resumed from step 10 with the run ending at step 15: its one save (step 15) is the next commit
        var (resumed, text) = Disttrain.Run(Limit, ["train", .. args, "--set", "train.steps=15", "--set", $"train.run_dir={Path.Combine(dir.Path, "resumed")}", "--resume", "latest"]);
        Assert.True(resumed == 0, text);
        Assert.Contains($"ignoring {ours}: an interrupted save of this job (no complete manifest); it is removed when this job's next save commits", text);
        Assert.Contains($"ignoring {theirs}: an unfinished save of job 'theirs' (no complete manifest); left alone", text);
        Assert.False(Directory.Exists(ours), "our interrupted save outlived our next commit");
        Assert.True(Directory.Exists(theirs), "another job's save was removed");
        Assert.Equal([theirs], Directory.GetDirectories(root, ".tmp-*"));
        Assert.Equal("step-00000015", File.ReadAllText(Path.Combine(root, "latest")).Trim());
    }
}
