using System.Net;
using System.Net.Sockets;

namespace DistTrain.Cli.Tests;

/// <summary>
/// A user's mistake through the real executable: exit 2, one line naming the file, field, option or
/// port and what to do, no .NET stack trace, nothing half-written (issue 14, item 2).
/// </summary>
public class UserErrorTests
{
    static readonly TimeSpan Limit = CheckpointTests.Limit;

    internal static void AssertOneLineError(int code, string output, string expected)
    {
        Assert.True(code == 2, $"exit {code}: {output}");
        Assert.Contains(expected, output);
        Assert.DoesNotContain("   at ", output);
        Assert.DoesNotContain("Exception", output);
    }

    [Fact]
    public void BadInputsToTrainPrepareAndLaunchNameWhatToFix()
    {
        using var dir = new TempFolder();
        var (code, output) = Disttrain.Run(Limit, "train", "--config", "configs/tiny-muddformer.yaml", "--set", $"data.train={Path.Combine(dir.Path, "nowhere")}");
        AssertOneLineError(code, output, $"data.train: {Path.Combine(dir.Path, "nowhere")} does not exist");

        (code, output) = Disttrain.Run(Limit, "launch", "--manifest", Path.Combine(dir.Path, "missing.yaml"), "--config", "configs/tiny-muddformer.yaml");
        AssertOneLineError(code, output, "cluster manifest not found; pass --manifest");

        var text = Path.Combine(dir.Path, "a.txt");
        File.WriteAllText(text, "In the beginning. And the earth.");
        (code, output) = Disttrain.Run(Limit, "prepare", "-i", text, "-o", Path.Combine(dir.Path, "out"), "--val-fraction", "1.5");
        AssertOneLineError(code, output, "--val-fraction 1.5: outside [0, 1)");
        Assert.False(Directory.Exists(Path.Combine(dir.Path, "out")) && Directory.EnumerateFileSystemEntries(Path.Combine(dir.Path, "out")).Any());
    }

    [Fact]
    public void ACheckpointsUsersGetTheirMistakesNamed()
    {
        using var dir = new TempFolder();
        var (code, output) = CheckpointTests.Train(dir.Path, "run", 1, "--set", "train.steps=10");
        Assert.True(code == 0, output);
        string root = Path.Combine(dir.Path, "ckpt-run"), step10 = Path.Combine(root, "step-00000010");

        // the root where a checkpoint is asked for
        (code, output) = Disttrain.Run(Limit, "ckpt", "inspect", root);
        AssertOneLineError(code, output, $"{root}: is a checkpoint root (checkpoint.dir), not a checkpoint; its latest is {step10}");

        // score: string tokens, a missing input, an existing output; nothing left behind
        var strings = Path.Combine(dir.Path, "strings.jsonl");
        File.WriteAllText(strings, "{\"tokens\": [\"a\", \"b\"]}\n");
        var scored = Path.Combine(dir.Path, "scored.jsonl");
        (code, output) = Disttrain.Run(Limit, "score", "--checkpoint", step10, "-i", strings, "-o", scored);
        AssertOneLineError(code, output, $"{strings}:1: tokens[0] is \"a\", not an integer token id");
        Assert.Empty(Directory.GetFiles(dir.Path, "scored.jsonl*"));
        (code, output) = Disttrain.Run(Limit, "score", "--checkpoint", step10, "-i", Path.Combine(dir.Path, "none.jsonl"), "-o", scored);
        AssertOneLineError(code, output, "none.jsonl: not found; --input takes a JSONL file");
        File.WriteAllText(scored, "keep me");
        var good = Path.Combine(dir.Path, "good.jsonl");
        File.WriteAllText(good, "{\"tokens\": [1, 2, 3]}\n");
        (code, output) = Disttrain.Run(Limit, "score", "--checkpoint", step10, "-i", good, "-o", scored);
        AssertOneLineError(code, output, $"{scored}: exists; choose a new --out");
        Assert.Equal("keep me", File.ReadAllText(scored));
        var nowhere = Path.Combine(dir.Path, "no-folder", "scored.jsonl");
        (code, output) = Disttrain.Run(Limit, "score", "--checkpoint", step10, "-i", good, "-o", nowhere);
        AssertOneLineError(code, output, $"--out {nowhere}: the folder {Path.GetDirectoryName(nowhere)} does not exist; create it or write elsewhere");

        // resuming a run that already finished says so and how to go on
        (code, output) = CheckpointTests.Train(dir.Path, "again", 1, "--set", "train.steps=10", "--resume", "latest", "--set", $"checkpoint.dir={root}");
        AssertOneLineError(code, output, "the run already finished: it is at step 10 and train.steps is 10; to train further raise train.steps (e.g. --set train.steps=20)");
    }

    [Fact]
    public void ACoordinatorWhosePortIsTakenSaysSoAndSuggestsAnother()
    {
        using var dir = new TempFolder();
        using var holder = new TcpListener(IPAddress.Loopback, 0);
        holder.Start();
        int port = ((IPEndPoint)holder.LocalEndpoint).Port;
        var manifest = Path.Combine(dir.Path, "m.yaml");
        File.WriteAllText(manifest, $$"""
            job: taken
            backend: ring
            coordinator: {host: 127.0.0.1, port: {{port}}}
            token: value:t
            nodes:
              - {host: 127.0.0.1, cpus: 1}
            """);
        var (code, output) = Disttrain.Run(Limit, "coordinator", "--manifest", manifest, "--config", "configs/tiny-muddformer.yaml");
        AssertOneLineError(code, output, $"coordinator.port: 127.0.0.1:{port} is already in use (another job's coordinator, or any other program); set coordinator.port in the manifest to a free port such as ");
    }
}
