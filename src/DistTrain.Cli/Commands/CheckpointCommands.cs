using System.CommandLine;
using System.Text.Json;
using DistTrain.Checkpoint;
using DistTrain.Data;
using DistTrain.Model;
using DistTrain.Training.Checkpointing;
using DistTrain.Training.Config;
using Spectre.Console;
using static TorchSharp.torch;

namespace DistTrain.Cli.Commands;

/// <summary>disttrain ckpt inspect PATH; export --checkpoint PATH --format hf|llama --out DIR; import --format llama DIR --out CKPT; score; eval.</summary>
static class CheckpointCommands
{
    public static Command Inspect()
    {
        var path = new Argument<string>("path") { Description = "a checkpoint folder" };
        var inspect = new Command("inspect", "show a checkpoint's step, world size, tensors and sizes, and verify its checksums, headers and tensor index") { path };
        inspect.SetAction(parse =>
        {
            var dir = Path.GetFullPath(parse.GetValue(path)!);
            var m = TrainingCheckpoint.Verified(dir);
            AnsiConsole.MarkupLineInterpolated($"[bold]{dir}[/]: {m.Format}, step {m.Step}, {m.Tokens:N0} tokens, world size {m.WorldSize}, written {m.CreatedUtc:u}");
            var files = new Table().AddColumns("file", "bytes", "sha256");
            foreach (var f in m.Files) files.AddRow(f.Name, f.Bytes.ToString("N0"), f.Sha256[..16] + "…");
            AnsiConsole.Write(files);
            var tensors = new Table().AddColumns("tensor", "file", "dtype", "shape");
            foreach (var t in m.Tensors) tensors.AddRow(Markup.Escape(t.Name), Markup.Escape(t.File), t.Dtype, Markup.Escape($"[{string.Join(", ", t.Shape)}]"));
            AnsiConsole.Write(tensors);
            AnsiConsole.MarkupLineInterpolated($"verified: {m.Files.Count} files, {m.Files.Sum(f => f.Bytes):N0} bytes (checksums, headers, tensor index)");
            return 0;
        });
        return new Command("ckpt", "inspect checkpoints") { inspect };
    }

    public static Command Score()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "a checkpoint folder", Required = true };
        var input = new Option<string>("--input", "-i") { Description = "JSONL, one {\"tokens\": [...]} per line", Required = true };
        var output = new Option<string>("--out", "-o") { Description = "JSONL with \"logprobs\" added to each line (must not exist)", Required = true };
        var command = new Command("score", "log-probability of every next token of each input sequence") { checkpoint, input, output };
        command.SetAction(parse =>
        {
            var (model, _, _) = TrainingCheckpoint.LoadModel(parse.GetValue(checkpoint)!);
            using var _ = model;
            int lines = Scoring.Score(model, parse.GetValue(input)!, parse.GetValue(output)!);
            AnsiConsole.MarkupLineInterpolated($"scored {lines} sequences into {parse.GetValue(output)}");
            return 0;
        });
        return command;
    }

    public static Command Eval()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "a checkpoint folder", Required = true };
        var data = new Option<string[]>("--data") { Description = "Parquet files or folders to evaluate on", Required = true, AllowMultipleArgumentsPerToken = true };
        var command = new Command("eval", "validation loss and perplexity of a checkpoint on Parquet data") { checkpoint, data };
        command.SetAction(parse =>
        {
            var (model, tree, manifest) = TrainingCheckpoint.LoadModel(parse.GetValue(checkpoint)!);
            using var _ = model;
            var (loss, windows) = Scoring.Evaluate(model, tree, parse.GetValue(data)!);
            AnsiConsole.MarkupLineInterpolated($"step {manifest.Step}: loss {loss:F4}, perplexity {Math.Exp(loss):F3} over {windows:N0} windows");
            return 0;
        });
        return command;
    }

    public static Command Export()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "a checkpoint folder", Required = true };
        var format = new Option<string>("--format")
        {
            Description = "hf: config.json + model.safetensors in the official MUDDFormer layout (DenseFormer and Transformer++ under DistTrain's names); " +
                          "llama: a Transformer++ as transformers' LlamaForCausalLM (Qwen3ForCausalLM with use_qk_norm)",
            DefaultValueFactory = _ => "hf",
        };
        var output = new Option<string>("--out", "-o") { Description = "output folder (must not exist or be empty)", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "bf16, fp16 or fp32", DefaultValueFactory = _ => "bf16" };
        var command = new Command("export", "export a checkpoint's weights for other tools") { checkpoint, format, output, dtype };
        command.SetAction(parse =>
        {
            var kind = parse.GetValue(format);
            if (kind is not ("hf" or "llama")) throw new ArgumentException($"--format {kind}: not one of hf (official MUDDFormer layout), llama (transformers' LlamaForCausalLM, Transformer++ only)");
            var target = parse.GetValue(dtype) switch
            {
                "bf16" => ScalarType.BFloat16,
                "fp16" => ScalarType.Float16,
                "fp32" => ScalarType.Float32,
                var other => throw new ArgumentException($"--dtype {other}: not one of bf16, fp16, fp32"),
            };
            var (model, tree, m) = TrainingCheckpoint.LoadModel(parse.GetValue(checkpoint)!);
            using var _ = model;
            var config = model.Config;
            var outDir = parse.GetValue(output)!;
            if (kind == "llama")
            {
                LlamaFormat.Write(model, outDir, target, EndOfText(tree, m));
                AnsiConsole.MarkupLineInterpolated($"wrote {outDir}/{LlamaFormat.ConfigFileName} and {LlamaFormat.WeightsFileName} ({LlamaFormat.ArchitectureOf(config)}, step {m.Step}, {target})");
                if (config.RotaryPrecision == RotaryPrecision.Bf16)
                    Console.Error.WriteLine("note: this model's rotary tables are rounded to bf16 (model.rotary_precision=bf16, the official MUDDFormer code's choice); " +
                        "transformers computes them in fp32, so its log-probabilities differ slightly from `disttrain score`. " +
                        "Train with --set model.rotary_precision=fp32 for an exact match; `disttrain import` restores bf16 tables from config.json's disttrain_rotary_precision");
                return 0;
            }
            HfExport.Write(model, outDir, target);
            AnsiConsole.MarkupLineInterpolated($"wrote {outDir}/{HfExport.ConfigFileName} and {HfExport.WeightsFileName} ({config.Arch}, step {m.Step}, {target})");
            return 0;
        });
        return command;
    }

    public static Command Import()
    {
        var source = new Argument<string>("dir") { Description = "a folder with config.json and model.safetensors (or model-*.safetensors and model.safetensors.index.json), as transformers' save_pretrained writes" };
        var format = new Option<string>("--format") { Description = "llama: LlamaForCausalLM (or Qwen3ForCausalLM) without rope scaling, grouped-query attention or biases", Required = true };
        var output = new Option<string>("--out", "-o") { Description = "the checkpoint folder to write (must not exist)", Required = true };
        var tokenizer = new Option<string?>("--tokenizer") { Description = $"record the tokenizer that generate decodes with ({string.Join(", ", TokenizerFactory.Names)})" };
        var command = new Command("import", "turn another tool's weights into a DistTrain checkpoint (score, eval, generate, export; train --init-from)") { source, format, output, tokenizer };
        command.SetAction(parse =>
        {
            if (parse.GetValue(format) != "llama") throw new ArgumentException($"--format {parse.GetValue(format)}: only llama is supported");
            var dir = Path.GetFullPath(parse.GetValue(source)!);
            var name = parse.GetValue(tokenizer);
            if (name is not null && !TokenizerFactory.Names.Contains(name))
                throw new ArgumentException($"--tokenizer {name}: not known; use one of {string.Join(", ", TokenizerFactory.Names)}");
            using var model = LlamaFormat.Read(dir);
            var outDir = Path.GetFullPath(parse.GetValue(output)!);
            WeightsCheckpoint.Write(model, outDir, dir, name);
            var c = model.Config;
            AnsiConsole.MarkupLineInterpolated($"wrote {outDir}: Transformer++ {c.NLayer} layers, dim {c.Dim}, {c.NHead} heads, vocab {c.VocabSize}{(c.UseQkNorm ? ", QK-norm" : "")}, rotary tables {TrainConfigLoader.Name(c.RotaryPrecision)}");
            Console.WriteLine($"score, eval, generate and export read it; start a run from it with: disttrain train --config C --init-from {outDir} (C's model section: {string.Join(" ", WeightsCheckpoint.ModelSection(c).Select(kv => $"{kv.Key}={kv.Value}"))})");
            return 0;
        });
        return command;
    }

    /// <summary>The run's end-of-text id: data.end_of_text of its config, else the end-of-text of the tokenizer its manifest names; null when neither says.</summary>
    static int? EndOfText(Dictionary<string, object?> tree, CheckpointManifest manifest)
    {
        if (tree.GetValueOrDefault("data") is Dictionary<string, object?> data && data.GetValueOrDefault("end_of_text") is string text
            && int.TryParse(text, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var id) && id >= 0)
            return id;
        if (manifest.Extra.GetValueOrDefault(RunTokenizer.ManifestKey) is { } name && TokenizerFactory.Names.Contains(name))
            return TokenizerFactory.Create(name).EndOfText;
        return null;
    }
}
