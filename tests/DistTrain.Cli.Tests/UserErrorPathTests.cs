namespace DistTrain.Cli.Tests;

/// <summary>
/// More of every command's error paths through the real executable (issue 14, item 2): a folder, file or option that is
/// wrong gives one line naming it and what to do, exit 2, and leaves nothing behind. Each case fails before any training.
/// </summary>
public class UserErrorPathTests
{
    static readonly TimeSpan Limit = TimeSpan.FromMinutes(3);   // each case stops at its check, seconds; a loaded 2-core machine is slow to start .NET

    static void Fails(string expected, params string[] args)
    {
        var (code, output) = Disttrain.Run(Limit, args);
        UserErrorTests.AssertOneLineError(code, output, expected);
    }

    [Fact]
    public void WrongFilesAndFoldersAreNamedAndNothingIsLeftBehind()
    {
        using var dir = new TempFolder();
        var file = Path.Combine(dir.Path, "a-file");
        File.WriteAllText(file, "not a folder");
        var runs = Path.Combine(dir.Path, "runs");
        string[] tiny = ["train", "--config", "configs/tiny-muddformer.yaml", "--set", "train.steps=1", "--set", "train.eval_batches=1"];

        Fails($"{dir.Path}: is a folder, not a YAML file; pass --config with a path such as configs/tiny-muddformer.yaml", "train", "--config", dir.Path);
        Fails($"train.run_dir: cannot create {file}/tiny-muddformer-", [.. tiny, "--set", $"train.run_dir={file}"]);
        Fails($"train.run_dir: cannot write to /proc/disttrain-runs/tiny-muddformer-", [.. tiny, "--set", "train.run_dir=/proc/disttrain-runs"]);
        Fails($"checkpoint.dir: cannot create {file}: {file} is a file, not a folder; set checkpoint.dir to a folder",
            [.. tiny, "--set", $"checkpoint.dir={file}", "--set", $"train.run_dir={runs}"]);
        Assert.False(Directory.Exists(runs));   // refused before the run directory was made
        Fails($"{Path.Combine(dir.Path, "nowhere")}: no such folder; give a checkpoint folder (RUN/checkpoints/step-NNNNNNNN)",
            [.. tiny, "--resume", Path.Combine(dir.Path, "nowhere"), "--set", $"train.run_dir={runs}"]);
        Assert.False(Directory.Exists(runs));
        Fails($"{file}: cannot open as Parquet (not a parquet file, head: 6E6F7420, tail: 6C646572); is it a file written by `disttrain prepare`?", [.. tiny, "--set", $"data.train={file}", "--set", "data.end_of_text=256"]);
        Fails($"{file}: is a file, not a checkpoint; give a checkpoint folder", "ckpt", "inspect", file);
        // launch checks the folders its ranks write before it starts any: one line, not one failure per process
        var (code, output) = Disttrain.Run(Limit, "launch", "--manifest", Disttrain.LocalManifest(dir.Path, 2), "--config", "configs/tiny-transformerpp.yaml",
            "--set", $"train.run_dir={file}");
        UserErrorTests.AssertOneLineError(code, output, $"train.run_dir: cannot create {file}: {file} is a file, not a folder; set train.run_dir to a folder");
        Assert.DoesNotContain("[rank", output);
        Assert.DoesNotContain("[coordinator]", output);
        Assert.Equal("not a folder", File.ReadAllText(file));
    }

    [Fact]
    public void WrongOptionsAndSetKeysAreNamed()
    {
        using var dir = new TempFolder();
        // System.CommandLine's own checks: exit 2 like every other mistake, with where to look
        var (code, output) = Disttrain.Run(Limit, "bench", "--config", "configs/tiny-muddformer.yaml", "--fit-micro-batches", "abc");
        UserErrorTests.AssertOneLineError(code, output, "error: Cannot parse argument 'abc' for option '--fit-micro-batches'");
        Assert.Contains("see `disttrain bench --help` for the options", output);

        Fails("--set train.steps: expected key=value, for example --set train.steps=100", "train", "--config", "configs/tiny-muddformer.yaml", "--set", "train.steps");
        Fails("--set train.steps.max=3: 'train.steps' is a value, not a section", "train", "--config", "configs/tiny-muddformer.yaml", "--set", "train.steps.max=3");
        Fails("configs/tiny-muddformer.yaml: train.stepz: unknown key; known keys here: ", "train", "--config", "configs/tiny-muddformer.yaml", "--set", "train.stepz=3");
        Fails("configs/tiny-muddformer.yaml: train.steps: 'ten' is not a whole number", "train", "--config", "configs/tiny-muddformer.yaml", "--set", "train.steps=ten");

        var text = Path.Combine(dir.Path, "a.txt");
        File.WriteAllText(text, "In the beginning.");
        var (prepareCode, prepared) = Disttrain.Run(Limit, "prepare", "-i", text, "-o", Path.Combine(dir.Path, "out"), "-t", "gpt9");
        UserErrorTests.AssertOneLineError(prepareCode, prepared, "unknown tokenizer 'gpt9'; use one of: byte, cl100k_base, o200k_base");
        Assert.DoesNotContain("(Parameter", prepared);

        var manifest = Path.Combine(dir.Path, "auto.yaml");
        File.WriteAllText(manifest, """
            job: alone
            backend: ring
            coordinator: {host: 127.0.0.1, port: auto}
            token: value:t
            nodes:
              - {host: 127.0.0.1, cpus: 1}
            """);
        Fails($"{manifest}: coordinator.port: auto is picked by `disttrain launch`, which passes it to the processes it starts; a coordinator or worker started on its own needs the number: pass the same --port N to each",
            "coordinator", "--manifest", manifest, "--config", "configs/tiny-muddformer.yaml");
        Fails($"{manifest}: coordinator.port: auto, so the port is the one launch picked: pass --coordinator http://127.0.0.1:PORT", "status", "--manifest", manifest);

        var silent = Disttrain.LocalManifest(dir.Path, 1);   // a free port where nothing listens
        var port = File.ReadAllText(silent).Split("port: ")[1].Split('}')[0];
        Fails($"no coordinator answers at http://127.0.0.1:{port} (Unavailable", "status", "--manifest", silent);
    }
}
