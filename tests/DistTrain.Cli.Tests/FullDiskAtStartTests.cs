using System.Text.RegularExpressions;

namespace DistTrain.Cli.Tests;

/// <summary>A run whose folders cannot be written (a full disk) stops before its first step with one line naming the key, the path and the fix.</summary>
public class FullDiskAtStartTests
{
    static readonly TimeSpan Limit = TimeSpan.FromMinutes(8);

    static string[] Args(string runs, string checkpoints) =>
    [
        "--config", "configs/tiny-muddformer.yaml", "--set", "train.steps=4", "--set", "train.seq_len=64", "--set", "train.global_batch=12",
        "--set", "train.micro_batch=6", "--set", "data.shards=6", "--set", "train.eval_interval=0", "--set", "train.eval_batches=1",
        "--set", $"train.run_dir={runs}", "--set", "checkpoint.interval=2", "--set", $"checkpoint.dir={checkpoints}",
    ];

    [Fact]
    public void ACheckpointDirOnAFullDiskIsOneClearError()
    {
        using var dir = new TempFolder();
        using var disk = new FullDisk(dir.Path);
        var checkpoints = Path.Combine(disk.Path, "ckpt");
        disk.FillProbe(checkpoints, 0);
        var (code, output) = Disttrain.Run(Limit, ["train", .. Args(Path.Combine(dir.Path, "runs"), checkpoints)]);
        Assert.True(code == 2, output);
        Assert.Matches($@"^error: \S+: checkpoint\.dir: cannot write to {Regex.Escape(checkpoints)} \(No space left on device.*\); free space on that disk .* or set checkpoint\.dir to a writable folder with room$",
            LastLines.Of(output));
        Assert.DoesNotContain("   at ", output);   // no stack trace for a full disk
        Assert.DoesNotContain("run directory:", output);   // stopped before training began
    }

    [Fact]
    public void ARunDirOnAFullDiskIsOneClearError()
    {
        using var dir = new TempFolder();
        using var disk = new FullDisk(dir.Path);
        // without the tmpfs: a file where the folder should be (it cannot be created; the error is the same kind)
        var runs = disk.Mounted ? Path.Combine(disk.Path, "runs") : Path.Combine(dir.Path, "a-file");
        if (!disk.Mounted) File.WriteAllText(runs, "");
        var (code, output) = Disttrain.Run(Limit, ["train", .. Args(runs, Path.Combine(dir.Path, "ckpt"))]);
        Assert.True(code == 2, output);
        Assert.Matches(disk.Mounted
            ? $@"^error: \S+: train\.run_dir: cannot write to {Regex.Escape(runs)}/\S+ \(No space left on device.*\); free space on that disk .* or set train\.run_dir to a writable folder with room$"
            : $@"^error: \S+: train\.run_dir: cannot create {Regex.Escape(runs)}/\S+: {Regex.Escape(runs)} is a file, not a folder; set train\.run_dir to a folder$",
            LastLines.Of(output));
        Assert.DoesNotContain("   at ", output);
    }

    [Fact]
    public void AFullDiskAtTheStartOfAJobIsNamedInEveryProcesssLastLine()
    {
        using var dir = new TempFolder();
        using var disk = new FullDisk(dir.Path);
        var checkpoints = Path.Combine(disk.Path, "ckpt");
        disk.FillProbe(checkpoints, 0);
        disk.FillProbe(checkpoints, 1);
        string[] args = ["launch", "--manifest", Disttrain.LocalManifest(dir.Path, 2), .. Args(Path.Combine(dir.Path, "runs"), checkpoints)];
        var (code, output) = Disttrain.Run(Limit, args);
        Assert.True(code != 0, output);
        var failure = $@"\S+: checkpoint\.dir: cannot write to {Regex.Escape(checkpoints)} \(No space left on device.*\); free space on that disk";
        var cause = $@"rank [01] \(127\.0\.0\.1\) failed at step 0: {failure}";
        Assert.Matches(@"^\[coordinator\] job 'test-2' failed: " + cause, LastLines.Of(output, "coordinator"));
        Assert.Matches(@"^\[launch\] job 'test-2' failed: " + cause, LastLines.Of(output, "launch"));
        foreach (var rank in new[] { "rank 0", "rank 1" })
            Assert.Matches($@"^\[{rank}\] error: ({rank}: stopped by the coordinator: {cause}|{failure})", LastLines.Of(output, rank));
        Assert.DoesNotContain("lost", output);
        Assert.DoesNotContain("   at ", output);
    }
}
