using System.Text.Json;

namespace DistTrain.Cli.Tests;

/// <summary>export --format llama, then import --format llama, through the real executable: the same log-probabilities, and a run starts from it.</summary>
public class LlamaImportTests
{
    static readonly TimeSpan Limit = CheckpointTests.Limit;

    static string[] TrainArgs(string dir, string name, int steps) =>
    [
        "train", "--config", "configs/tiny-transformerpp.yaml", "--set", $"train.steps={steps}", "--set", "train.micro_batch=4", "--set", "train.seq_len=32",
        "--set", "train.eval_interval=0", "--set", "train.eval_batches=0", "--set", "optim.warmup_steps=1", "--set", "train.log_interval=1",
        "--set", $"train.run_dir={Path.Combine(dir, "runs-" + name)}", "--set", $"checkpoint.dir={Path.Combine(dir, "ckpt-" + name)}",
    ];

    static string[] Logprobs(string path) =>
        File.ReadAllLines(path).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("logprobs").GetRawText()).ToArray();

    [Fact]
    public void ExportThenImportScoresTheSameAndARunStartsFromTheImport()
    {
        using var dir = new TempFolder();
        var (code, output) = Disttrain.Run(Limit, TrainArgs(dir.Path, "source", 3));
        Assert.True(code == 0, output);
        var source = Path.Combine(dir.Path, "ckpt-source", "step-00000003");
        var llama = Path.Combine(dir.Path, "llama");
        (code, output) = Disttrain.Run(Limit, "export", "--checkpoint", source, "--format", "llama", "--dtype", "fp32", "--out", llama);
        Assert.True(code == 0, output);
        Assert.Contains("(LlamaForCausalLM, step 3, Float32)", output);
        Assert.Contains("note: this model's rotary tables are rounded to bf16", output);

        var imported = Path.Combine(dir.Path, "imported");
        (code, output) = Disttrain.Run(Limit, "import", "--format", "llama", llama, "--out", imported, "--tokenizer", "byte");
        Assert.True(code == 0, output);
        Assert.Contains($"wrote {imported}: Transformer++ 4 layers, dim 64, 4 heads, vocab 264, rotary tables bf16", output);

        var input = Path.Combine(dir.Path, "in.jsonl");
        File.WriteAllLines(input, [
            JsonSerializer.Serialize(new { tokens = "In the beginning God created the heaven and the earth."u8.ToArray().Select(b => (int)b) }),
            JsonSerializer.Serialize(new { tokens = Enumerable.Range(0, 60).Select(i => i * 37 % 256) }),
        ]);
        foreach (var (checkpoint, name) in new[] { (source, "source.jsonl"), (imported, "imported.jsonl") })
        {
            (code, output) = Disttrain.Run(Limit, "score", "--checkpoint", checkpoint, "--input", input, "--out", Path.Combine(dir.Path, name));
            Assert.True(code == 0, output);
        }
        Assert.Equal(Logprobs(Path.Combine(dir.Path, "source.jsonl")), Logprobs(Path.Combine(dir.Path, "imported.jsonl")));   // identical text

        (code, output) = Disttrain.Run(Limit, [.. TrainArgs(dir.Path, "tuned", 2), "--init-from", imported]);
        Assert.True(code == 0, output);
        Assert.True(File.Exists(Path.Combine(dir.Path, "ckpt-tuned", "step-00000002", "manifest.json")), output);

        (code, output) = Disttrain.Run(Limit, [.. TrainArgs(dir.Path, "resumed", 2), "--resume", imported]);
        Assert.Equal(2, code);
        Assert.Contains($"error: {imported}: imported from {llama}: weights only (no optimizer state, no data position), nothing to resume; start a run from it with --init-from {imported}", output);
    }

    [Fact]
    public void ImportErrorsNameTheFileOrOptionAndExitWith2()
    {
        using var dir = new TempFolder();
        var missing = Path.Combine(dir.Path, "nothing");
        var (code, output) = Disttrain.Run(Limit, "import", "--format", "llama", missing, "--out", Path.Combine(dir.Path, "out"));
        Assert.Equal(2, code);
        Assert.Contains($"error: {missing}: not found; import --format llama reads a folder with config.json and model.safetensors", output);

        Directory.CreateDirectory(missing);
        (code, output) = Disttrain.Run(Limit, "import", "--format", "llama", missing, "--out", Path.Combine(dir.Path, "out"));
        Assert.Equal(2, code);
        Assert.Contains($"error: {missing}/config.json: not found;", output);

        File.WriteAllText(Path.Combine(missing, "config.json"), """{"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "linear", "factor": 2.0}}""");
        (code, output) = Disttrain.Run(Limit, "import", "--format", "llama", missing, "--out", Path.Combine(dir.Path, "out"));
        Assert.Equal(2, code);
        Assert.Contains($"error: {missing}/config.json: rope_scaling: {{\"rope_type\":\"linear\",\"factor\":2.0}}; DistTrain computes plain rotary only", output);

        File.WriteAllText(Path.Combine(missing, "config.json"), """{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}""");
        (code, output) = Disttrain.Run(Limit, "import", "--format", "llama", missing, "--out", Path.Combine(dir.Path, "out"));
        Assert.Equal(2, code);
        Assert.Contains($"error: {missing}/config.json: architectures: GPT2LMHeadModel is not supported", output);

        (code, output) = Disttrain.Run(Limit, "import", "--format", "gguf", missing, "--out", Path.Combine(dir.Path, "out"));
        Assert.Equal(2, code);
        Assert.Contains("error: --format gguf: only llama is supported", output);
        Assert.False(Directory.Exists(Path.Combine(dir.Path, "out")));
    }
}
