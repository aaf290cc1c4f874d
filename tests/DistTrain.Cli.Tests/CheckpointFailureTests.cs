using static DistTrain.Cli.Tests.CheckpointTests;

namespace DistTrain.Cli.Tests;

/// <summary>Saves that fail (a full disk, injected) and a latest that fails verification, through the real executable.</summary>
public class CheckpointFailureTests
{
    const string Fault = "DISTTRAIN_FAULT_CHECKPOINT";

    [Fact]
    public void AFailedSaveStopsTheRunByDefaultAndLeavesTheLastGoodCheckpoint()
    {
        using var dir = new TempFolder();
        var (code, output) = Disttrain.Run(Limit, ["train", .. Args(dir.Path, "full", 1), "--set", "checkpoint.interval=5"], (Fault, "io-error@10"));
        Assert.Equal(2, code);
        Assert.Contains("CHECKPOINT FAILED at step 10", output);
        Assert.Contains("No space left on device", output);
        Assert.Contains("Training stopped (checkpoint.on_failure=stop)", output);
        var root = Path.Combine(dir.Path, "ckpt-full");
        Assert.Equal("step-00000005", File.ReadAllText(Path.Combine(root, "latest")).Trim());
        Assert.Equal(["step-00000005"], Directory.GetDirectories(root).Select(Path.GetFileName));   // the failed save's folder is removed
    }

    [Fact]
    public void WithOnFailureContinueAJobTrainsOnAndTheNextSaveCommits()
    {
        using var dir = new TempFolder();
        // two workers: only rank 1's disk fails; the coordinator aborts the save for both ranks
        string[] args = ["launch", "--manifest", Disttrain.LocalManifest(dir.Path, 2), .. Args(dir.Path, "full", 2), "--set", "checkpoint.interval=5", "--set", "checkpoint.on_failure=continue"];
        var (code, output) = Disttrain.Run(Limit, args, (Fault, "io-error@10@1"));
        Assert.True(code == 0, output);
        Assert.Contains("CHECKPOINT FAILED at step 10: rank 1 (127.0.0.1): ", output);
        var root = Path.Combine(dir.Path, "ckpt-full");
        Assert.Equal("step-00000020", File.ReadAllText(Path.Combine(root, "latest")).Trim());
        Assert.Equal(["step-00000005", "step-00000015", "step-00000020"], Directory.GetDirectories(root).Select(Path.GetFileName).Order());
        Assert.Equal(20, Losses(Path.Combine(dir.Path, "full")).Length);
    }

    [Fact]
    public void AFailedFinalSaveEndsTheRunWithAnErrorEvenWithOnFailureContinue()
    {
        using var dir = new TempFolder();
        string[] args = ["train", .. Args(dir.Path, "full", 1), "--set", "checkpoint.interval=5", "--set", "checkpoint.on_failure=continue"];
        var (code, output) = Disttrain.Run(Limit, args, (Fault, "io-error@20"));
        Assert.True(code != 0, output);
        Assert.Contains("the final checkpoint (step 20) failed: ", output);
        Assert.Contains("its last steps are not saved", output);
        Assert.Equal("step-00000015", File.ReadAllText(Path.Combine(dir.Path, "ckpt-full", "latest")).Trim());
    }

    [Fact]
    public void ALatestThatFailsVerificationIsRefusedUnlessFallbackIsAsked()
    {
        using var dir = new TempFolder();
        var (code, output) = Train(dir.Path, "full", 1);   // saves steps 10 and 20
        Assert.True(code == 0, output);
        var root = Path.Combine(dir.Path, "ckpt-full");
        var shard = Path.Combine(root, "step-00000020", "shard-00000-of-00001.safetensors");
        using (var file = new FileStream(shard, FileMode.Open)) file.SetLength(file.Length - 7);   // truncated

        var (refused, message) = Train(dir.Path, "resumed", 1, "--set", $"checkpoint.dir={root}", "--resume", "latest");
        Assert.Equal(2, refused);
        Assert.True(message.Contains($"{shard}: size"), message);
        Assert.Contains("--resume-fallback", message);

        var (resumed, text) = Train(dir.Path, "resumed", 1, "--set", $"checkpoint.dir={root}", "--set", "train.steps=25", "--resume", "latest", "--resume-fallback");
        Assert.True(resumed == 0, text);
        Assert.Contains($"passed over (checkpoint.fallback): {shard}: size", text);
        Assert.Contains($"resuming from {Path.Combine(root, "step-00000010")} at step 10", text);
        Assert.Equal(15, Losses(Path.Combine(dir.Path, "resumed")).Length);
    }
}
