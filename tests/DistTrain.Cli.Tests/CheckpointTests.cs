using System.Text.Json;

namespace DistTrain.Cli.Tests;

/// <summary>Sharded checkpoints through the real executable: bitwise resume, resharding, corruption, export.</summary>
public class CheckpointTests
{
    internal static readonly TimeSpan Limit = TimeSpan.FromMinutes(8);   // a hang ends here (before the 10-minute blame-hang timeout); a loaded 2-core machine took over 4 minutes

    internal static string[] Args(string dir, string runs, int workers, int shards = 6) =>
    [
        "--config", "configs/tiny-muddformer.yaml", "--set", "train.steps=20", "--set", "train.log_interval=1", "--set", "train.seq_len=64",
        "--set", "train.global_batch=12", "--set", $"train.micro_batch={12 / workers}", "--set", $"data.shards={shards}", "--set", "train.eval_interval=0",
        "--set", "train.eval_batches=1", "--set", "optim.warmup_steps=2", "--set", "train.ledger=true",
        "--set", "checkpoint.interval=10", "--set", $"checkpoint.dir={Path.Combine(dir, "ckpt-" + runs)}", "--set", $"train.run_dir={Path.Combine(dir, runs)}",
    ];

    internal static (int, string) Train(string dir, string runs, int workers, params string[] extra) => Train(dir, runs, workers, 6, extra);

    internal static (int, string) Train(string dir, string runs, int workers, int shards, params string[] extra) => workers == 1
        ? Disttrain.Run(Limit, ["train", .. Args(dir, runs, workers, shards), .. extra])
        : Disttrain.Run(Limit, ["launch", "--manifest", Disttrain.LocalManifest(dir, workers), .. Args(dir, runs, workers, shards), .. extra]);

    internal static double[] Losses(string runs) =>
        File.ReadLines(Path.Combine(Directory.GetDirectories(runs).Single(), "metrics.jsonl"))
            .Select(l => JsonDocument.Parse(l).RootElement.GetProperty("loss").GetDouble()).ToArray();

    static IEnumerable<(int Shard, long Index)> Ledger(string runs) =>
        Directory.GetFiles(Directory.GetDirectories(runs).Single(), "ledger-rank*.jsonl").SelectMany(File.ReadLines)
            .SelectMany(l => JsonDocument.Parse(l).RootElement.GetProperty("windows").EnumerateArray().Select(w => (w[0].GetInt32(), w[2].GetInt64())).ToList());

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void ResumingFromStep10RepeatsSteps11To20Bitwise(int workers)
    {
        using var dir = new TempFolder();
        var (code, output) = Train(dir.Path, "full", workers);
        Assert.True(code == 0, output);
        var (resumedCode, resumedOutput) = Train(dir.Path, "resumed", workers, "--resume", Path.Combine(dir.Path, "ckpt-full", "step-00000010"));
        Assert.True(resumedCode == 0, resumedOutput);

        var full = Losses(Path.Combine(dir.Path, "full"));
        var resumed = Losses(Path.Combine(dir.Path, "resumed"));
        Assert.Equal(20, full.Length);
        Assert.Equal(full[10..], resumed);          // exact doubles
    }

    [Theory]
    [InlineData(2, 6)]
    [InlineData(4, 12)]
    public void SavedWithThreeWorkersResumedWithAnotherCountContinuesTheSameSamples(int resumedWorkers, int shards)
    {
        using var dir = new TempFolder();
        var (code, output) = Train(dir.Path, "three", 3, shards);
        Assert.True(code == 0, output);
        var (resumedCode, resumedOutput) = Train(dir.Path, "two", resumedWorkers, shards, "--resume", Path.Combine(dir.Path, "ckpt-three", "step-00000010"));
        Assert.True(resumedCode == 0, resumedOutput);
        int perShard = 12 / shards;   // windows per shard and step

        // the same samples per step (6 canonical shards); only the reduction order differs
        var three = Losses(Path.Combine(dir.Path, "three"));
        var two = Losses(Path.Combine(dir.Path, "two"));
        double gap = three[10..].Zip(two, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(gap < 1e-5, $"max |Δ loss| {gap:E2}");

        // the ledger: steps 1-10 of the three-worker run (up to the checkpoint), then steps 11-20 after the
        // resume: per shard 20 · perShard consecutive windows, each once
        var head = Ledger(Path.Combine(dir.Path, "three")).GroupBy(w => w.Shard)
            .ToDictionary(g => g.Key, g => g.OrderBy(w => w.Index).Take(10 * perShard).ToList());
        var tail = Ledger(Path.Combine(dir.Path, "two")).GroupBy(w => w.Shard).ToDictionary(g => g.Key, g => g.OrderBy(w => w.Index).ToList());
        Assert.Equal(shards, tail.Count);
        foreach (var shard in Enumerable.Range(0, shards))
        {
            var all = head[shard].Concat(tail[shard]).Select(w => w.Index).ToList();
            Assert.Equal(20 * perShard, all.Count);
            Assert.Equal(all.Distinct().Count(), all.Count);
            Assert.Equal(Enumerable.Range(0, 20 * perShard).Select(i => all[0] + i), all.Order());
        }

        var (inspect, text) = Disttrain.Run(Limit, "ckpt", "inspect", Path.Combine(dir.Path, "ckpt-three", "step-00000010"));
        Assert.True(inspect == 0, text);
        Assert.Contains("world size 3", text);
        Assert.Contains("verified: 6 files", text);   // 3 shards + 3 cursor files
    }

    [Fact]
    public void ACorruptShardIsRefusedByName()
    {
        using var dir = new TempFolder();
        var (code, output) = Train(dir.Path, "full", 1, "--set", "train.steps=10");
        Assert.True(code == 0, output);
        var checkpoint = Path.Combine(dir.Path, "ckpt-full", "step-00000010");
        var shard = Path.Combine(checkpoint, "shard-00000-of-00001.safetensors");
        var bytes = File.ReadAllBytes(shard);
        bytes[^100] ^= 1;
        File.WriteAllBytes(shard, bytes);

        var (resumed, message) = Train(dir.Path, "resumed", 1, "--resume", checkpoint);
        Assert.Equal(2, resumed);
        Assert.Contains($"{shard}: checksum mismatch", message);
        Assert.Contains("use an older checkpoint", message);
    }

    [Fact]
    public void ExportWritesTheOfficialLayout()
    {
        using var dir = new TempFolder();
        var (code, output) = Train(dir.Path, "full", 1, "--set", "train.steps=10");
        Assert.True(code == 0, output);
        var outDir = Path.Combine(dir.Path, "hf");
        var (exported, text) = Disttrain.Run(Limit, "export", "--checkpoint", Path.Combine(dir.Path, "ckpt-full", "step-00000010"), "--format", "hf", "--out", outDir);
        Assert.True(exported == 0, text);
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")));
        Assert.Equal("muddformer", config.RootElement.GetProperty("model_type").GetString());
        Assert.Equal(64, config.RootElement.GetProperty("dim").GetInt32());
        Assert.True(config.RootElement.GetProperty("dynamic_dense").GetBoolean());
        var weights = File.ReadAllBytes(Path.Combine(outDir, "model.safetensors"));
        long headerLength = BitConverter.ToInt64(weights, 0);
        using var header = JsonDocument.Parse(weights.AsMemory(8, (int)headerLength));
        foreach (var name in new[] { "tok_embeddings.weight", "layers.1.attention_norms.0.weight", "dense_bs.3", "dynamic_dense.3.w2.weight", "output.weight" })
            Assert.Equal("BF16", header.RootElement.GetProperty(name).GetProperty("dtype").GetString());

        // --dtype fp16 writes fp16 (it used to write bf16 silently); an unknown dtype is refused, nothing written
        var fp16Dir = Path.Combine(dir.Path, "hf16");
        var (fp16, fp16Text) = Disttrain.Run(Limit, "export", "--checkpoint", Path.Combine(dir.Path, "ckpt-full", "step-00000010"), "--out", fp16Dir, "--dtype", "fp16");
        Assert.True(fp16 == 0, fp16Text);
        var bytes16 = File.ReadAllBytes(Path.Combine(fp16Dir, "model.safetensors"));
        using var header16 = JsonDocument.Parse(bytes16.AsMemory(8, (int)BitConverter.ToInt64(bytes16, 0)));
        Assert.Equal("F16", header16.RootElement.GetProperty("output.weight").GetProperty("dtype").GetString());
        using var config16 = JsonDocument.Parse(File.ReadAllText(Path.Combine(fp16Dir, "config.json")));
        Assert.Equal("float16", config16.RootElement.GetProperty("torch_dtype").GetString());
        var badDir = Path.Combine(dir.Path, "hf8");
        var (bad, badText) = Disttrain.Run(Limit, "export", "--checkpoint", Path.Combine(dir.Path, "ckpt-full", "step-00000010"), "--out", badDir, "--dtype", "fp8");
        Assert.Equal(2, bad);
        Assert.Contains("--dtype fp8: not one of bf16, fp16, fp32", badText);
        Assert.DoesNotContain("   at ", badText);
        Assert.False(Directory.Exists(badDir) && Directory.EnumerateFileSystemEntries(badDir).Any());

        // a MUDDFormer has no Llama form: refused naming the key and the format that fits
        var llamaDir = Path.Combine(dir.Path, "llama");
        var (llama, llamaText) = Disttrain.Run(Limit, "export", "--checkpoint", Path.Combine(dir.Path, "ckpt-full", "step-00000010"), "--format", "llama", "--out", llamaDir);
        Assert.Equal(2, llama);
        Assert.Contains("error: --format llama: model.arch: muddformer has no Llama form", llamaText);
        Assert.Contains("export it with --format hf", llamaText);
        Assert.DoesNotContain("   at ", llamaText);
        Assert.False(Directory.Exists(llamaDir));
    }

    [Theory]
    [InlineData("after-shards")]
    [InlineData("after-manifest")]
    [InlineData("after-rename")]
    public void AWriterKilledDuringASaveLeavesALatestThatLoads(string point)
    {
        using var dir = new TempFolder();
        string[] args = [.. Args(dir.Path, "full", 1), "--set", "checkpoint.interval=5"];
        var (code, output) = Disttrain.Run(Limit, ["train", .. args], ("DISTTRAIN_FAULT_CHECKPOINT", $"{point}@10"));
        Assert.NotEqual(0, code);                                   // killed in the middle of the step-10 save
        var root = Path.Combine(dir.Path, "ckpt-full");
        Assert.Equal("step-00000005", File.ReadAllText(Path.Combine(root, "latest")).Trim());

        var (resumed, text) = Disttrain.Run(Limit, ["train", .. args, "--set", $"train.run_dir={Path.Combine(dir.Path, "resumed")}", "--resume", "latest"]);
        Assert.True(resumed == 0, text);
        Assert.Contains($"resuming from {Path.Combine(root, "step-00000005")} at step 5", text);
        if (point != "after-rename") Assert.Matches(@"ignoring .*\.tmp-step-00000010-[\w.%-]+@[\w.%-]+: an interrupted save of this job", text);
        Assert.Equal(15, Losses(Path.Combine(dir.Path, "resumed")).Length);
    }

    [Fact]
    public void ScoreAndEvalReadACheckpoint()
    {
        using var dir = new TempFolder();
        var (code, output) = Train(dir.Path, "full", 1, "--set", "train.steps=10");
        Assert.True(code == 0, output);
        var checkpoint = Path.Combine(dir.Path, "ckpt-full", "step-00000010");
        var input = Path.Combine(dir.Path, "in.jsonl");
        File.WriteAllText(input, "{\"tokens\": [73, 110, 32, 116, 104, 101]}\n{\"tokens\": [65, 110, 100]}\n");
        var scored = Path.Combine(dir.Path, "out.jsonl");
        var (scoreCode, scoreText) = Disttrain.Run(Limit, "score", "--checkpoint", checkpoint, "--input", input, "--out", scored);
        Assert.True(scoreCode == 0, scoreText);
        var rows = File.ReadAllLines(scored).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal([5, 2], rows.Select(r => r.GetProperty("logprobs").GetArrayLength()));
        Assert.All(rows.SelectMany(r => r.GetProperty("logprobs").EnumerateArray()), v => Assert.InRange(v.GetDouble(), -20, 0));

        File.WriteAllText(input, "{\"tokens\": [73, 9999]}\n");
        var (bad, badText) = Disttrain.Run(Limit, "score", "--checkpoint", checkpoint, "--input", input, "--out", Path.Combine(dir.Path, "bad.jsonl"));
        Assert.Equal(2, bad);
        Assert.Contains($"{input}:1: token 9999 is outside the vocabulary (0..263)", badText);

        var (evalCode, evalText) = Disttrain.Run(Limit, "eval", "--checkpoint", checkpoint, "--data", "configs/corpus/kjv/val");
        Assert.True(evalCode == 0, evalText);
        Assert.Matches(@"step 10: loss \d\.\d{4}, perplexity \d+\.\d{3} over 1,417 windows", evalText);
    }

    [Fact]
    public void InspectAndEvalRefuseATamperedIndexOrUnlistedShards()
    {
        using var dir = new TempFolder();
        var (code, output) = Train(dir.Path, "full", 1, "--set", "train.steps=5", "--set", "checkpoint.interval=5");
        Assert.True(code == 0, output);
        var checkpoint = Path.Combine(dir.Path, "ckpt-full", "step-00000005");
        var manifest = Path.Combine(checkpoint, "manifest.json");
        var original = File.ReadAllText(manifest);

        // world_size 1 -> 2 with two unlisted shard files dropped in: every listed file still verifies
        foreach (var name in new[] { "shard-00000-of-00002.safetensors", "shard-00001-of-00002.safetensors" })
            File.Copy(Path.Combine(checkpoint, "shard-00000-of-00001.safetensors"), Path.Combine(checkpoint, name));
        File.WriteAllText(manifest, original.Replace("\"world_size\": 1", "\"world_size\": 2"));
        foreach (var args in new[] { new[] { "ckpt", "inspect", checkpoint }, ["eval", "--checkpoint", checkpoint, "--data", "configs/corpus/kjv/val"] })
        {
            var (refused, text) = Disttrain.Run(Limit, args);
            Assert.True(refused == 2, text);
            Assert.Contains($"{manifest}: world_size 2 needs the shard files shard-00000-of-00002.safetensors, shard-00001-of-00002.safetensors, the file list names shard-00000-of-00001.safetensors", text);
            Assert.DoesNotContain("   at ", text);
        }

        // the tensor index moved by 8 bytes: the checksums still pass
        var json = System.Text.Json.Nodes.JsonNode.Parse(original)!;
        json["tensors"]![0]!["offset"] = json["tensors"]![0]!["offset"]!.GetValue<long>() + 8;
        File.WriteAllText(manifest, json.ToJsonString());
        var (moved, movedText) = Disttrain.Run(Limit, "ckpt", "inspect", checkpoint);
        Assert.True(moved == 2, movedText);
        Assert.Matches(@"tensor '\w+' is indexed at byte \d+, .* shard-00000-of-00001.safetensors holds it at byte \d+", movedText);
    }
}

