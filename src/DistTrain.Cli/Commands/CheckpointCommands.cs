using System.CommandLine;
using System.Text.Json;
using DistTrain.Checkpoint;
using DistTrain.Model;
using DistTrain.Training.Checkpointing;
using Spectre.Console;
using static TorchSharp.torch;

namespace DistTrain.Cli.Commands;

/// <summary>disttrain ckpt inspect PATH; disttrain export --checkpoint PATH --format hf --out DIR.</summary>
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
        var format = new Option<string>("--format") { Description = "hf: config.json + model.safetensors in the official MUDDFormer layout", DefaultValueFactory = _ => "hf" };
        var output = new Option<string>("--out", "-o") { Description = "output folder (must not exist or be empty)", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "bf16, fp16 or fp32", DefaultValueFactory = _ => "bf16" };
        var command = new Command("export", "export a checkpoint's weights for other tools") { checkpoint, format, output, dtype };
        command.SetAction(parse =>
        {
            if (parse.GetValue(format) != "hf") throw new ArgumentException($"--format {parse.GetValue(format)}: only hf is supported");
            var (model, _, m) = TrainingCheckpoint.LoadModel(parse.GetValue(checkpoint)!);
            using var _ = model;
            var config = model.Config;
            var target = parse.GetValue(dtype) switch
            {
                "bf16" => ScalarType.BFloat16,
                "fp16" => ScalarType.Float16,
                "fp32" => ScalarType.Float32,
                var other => throw new ArgumentException($"--dtype {other}: not one of bf16, fp16, fp32"),
            };
            HfExport.Write(model, parse.GetValue(output)!, target);
            AnsiConsole.MarkupLineInterpolated($"wrote {parse.GetValue(output)}/{HfExport.ConfigFileName} and {HfExport.WeightsFileName} ({config.Arch}, step {m.Step}, {target})");
            return 0;
        });
        return command;
    }
}
