namespace DistTrain.Cli.Tests;

public class CliTests
{
    static readonly TimeSpan Minutes = TimeSpan.FromMinutes(8);   // a hang ends here (before the 10-minute blame-hang timeout); a loaded 2-core machine took over 4 minutes

    [Fact]
    public void TrainRunsTheTinyMuddFormerAndPrintsItsRunDirectory()
    {
        var runs = Directory.CreateTempSubdirectory("disttrain-cli-").FullName;
        try
        {
            var (code, output) = Disttrain.Run(Minutes, "train", "--config", "configs/tiny-muddformer.yaml",
                "--set", "train.steps=20", "--set", "train.log_interval=10", "--set", "optim.warmup_steps=2", "--set", "train.seq_len=64", "--set", $"train.run_dir={runs}");
            Assert.True(code == 0, output);
            Assert.Matches(@"step\s+20\s+loss", output);
            var runDir = Directory.GetDirectories(runs).Single();
            Assert.Contains($"run directory: {runDir}", output.Replace("\n", ""));
            Assert.Equal(2, File.ReadAllLines(Path.Combine(runDir, "metrics.jsonl")).Length);
        }
        finally { Directory.Delete(runs, true); }
    }

    [Fact]
    public void ABadConfigExitsWithCode2AndNamesTheKey()
    {
        var (code, output) = Disttrain.Run(Minutes, "train", "--config", "configs/tiny-muddformer.yaml", "--set", "model.arch=gpt5");
        Assert.Equal(2, code);
        Assert.Contains("model.arch: 'gpt5' is not one of", output);
        Assert.DoesNotContain("   at ", output);    // a sentence, not a stack trace
    }

    [Fact]
    public void ModelInfoPrintsCountsFromTheModel()
    {
        var (code, output) = Disttrain.Run(Minutes, "model", "info", "--config", "configs/405m-muddformer.yaml");
        Assert.True(code == 0, output);
        Assert.Contains("414,021,701", output);          // total parameters of the 405M MUDDFormer
        Assert.Contains("dense-connection overhead: 2,355,269 parameters", output);
    }

    [Fact]
    public void PrepareTokenizesTextAndRefusesToOverwrite()
    {
        var dir = Directory.CreateTempSubdirectory("disttrain-prepare-").FullName;
        try
        {
            var text = Path.Combine(dir, "doc.txt");
            File.WriteAllText(text, "In the beginning God created the heaven and the earth.\n\nAnd the earth was without form, and void.");
            var outDir = Path.Combine(dir, "prepared");
            var (code, output) = Disttrain.Run(Minutes, "prepare", "--input", text, "--tokenizer", "byte", "--out", outDir, "--split-on-blank-lines");
            Assert.True(code == 0, output);
            Assert.True(File.Exists(Path.Combine(outDir, "dataset.json")));
            Assert.NotEmpty(Directory.GetFiles(outDir, "*.parquet", SearchOption.AllDirectories));

            var (again, message) = Disttrain.Run(Minutes, "prepare", "--input", text, "--tokenizer", "byte", "--out", outDir);
            Assert.Equal(2, again);
            Assert.Contains(outDir, message);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void AWorkerWhoseCoordinatorIsUnreachableRetriesThenSaysSo()
    {
        var dir = Directory.CreateTempSubdirectory("disttrain-unreachable-").FullName;
        try
        {
            var manifest = Disttrain.LocalManifest(dir, 2, connectTimeout: 3);   // nobody listens on its port
            var (code, output) = Disttrain.Run(Minutes, "worker", "--manifest", manifest, "--config", "configs/tiny-muddformer.yaml", "--local-slot", "1");
            Assert.Equal(2, code);
            Assert.Contains("is unreachable after waiting 3 s (heartbeat.connect_timeout_s", output);
            Assert.Contains("disttrain launch` starts it on node 0", output);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void LaunchRefusesMoreGpusThanTheHostHas()
    {
        var dir = Directory.CreateTempSubdirectory("disttrain-gpus-").FullName;
        try
        {
            var manifest = Path.Combine(dir, "m.yaml");
            File.WriteAllText(manifest, "job: g\nbackend: nccl\ntoken: value:t\nnodes:\n  - {host: 127.0.0.1, gpus: [0, 1, 2, 3, 4, 5, 6, 7, 8]}\n");
            int present = Directory.Exists("/proc/driver/nvidia/gpus") ? Directory.GetDirectories("/proc/driver/nvidia/gpus").Length : 0;
            var (code, output) = Disttrain.Run(Minutes, "launch", "--manifest", manifest, "--config", "configs/tiny-muddformer.yaml");
            Assert.Equal(2, code);
            Assert.Contains($"nodes[0].gpus: [0, 1, 2, 3, 4, 5, 6, 7, 8] listed, this host has {present} GPU(s)", output);
        }
        finally { Directory.Delete(dir, true); }
    }
}
