using System.CommandLine;
using System.Text.Json;
using DistTrain.Checkpoint;
using DistTrain.Model;
using DistTrain.Training.Optim;
using Spectre.Console;
using static TorchSharp.torch;

namespace DistTrain.Cli.Commands;

/// <summary>disttrain ckpt inspect PATH; disttrain export --checkpoint PATH --format hf --out DIR.</summary>
static class CheckpointCommands
{
    public static Command Inspect()
    {
        var path = new Argument<string>("path") { Description = "a checkpoint folder" };
        var inspect = new Command("inspect", "show a checkpoint's step, world size, tensors and sizes, and verify its checksums") { path };
        inspect.SetAction(parse =>
        {
            var dir = Path.GetFullPath(parse.GetValue(path)!);
            var m = CheckpointManifest.Read(dir);
            m.Verify(dir);
            AnsiConsole.MarkupLineInterpolated($"[bold]{dir}[/]: {m.Format}, step {m.Step}, {m.Tokens:N0} tokens, world size {m.WorldSize}, written {m.CreatedUtc:u}");
            var files = new Table().AddColumns("file", "bytes", "sha256");
            foreach (var f in m.Files) files.AddRow(f.Name, f.Bytes.ToString("N0"), f.Sha256[..16] + "…");
            AnsiConsole.Write(files);
            var tensors = new Table().AddColumns("tensor", "file", "dtype", "shape");
            foreach (var t in m.Tensors) tensors.AddRow(Markup.Escape(t.Name), Markup.Escape(t.File), t.Dtype, Markup.Escape($"[{string.Join(", ", t.Shape)}]"));
            AnsiConsole.Write(tensors);
            AnsiConsole.MarkupLineInterpolated($"checksums verified: {m.Files.Count} files, {m.Files.Sum(f => f.Bytes):N0} bytes");
            return 0;
        });
        return new Command("ckpt", "inspect checkpoints") { inspect };
    }

    public static Command Export()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "a checkpoint folder", Required = true };
        var format = new Option<string>("--format") { Description = "hf: config.json + model.safetensors in the official MUDDFormer layout", DefaultValueFactory = _ => "hf" };
        var output = new Option<string>("--out", "-o") { Description = "output folder (must not exist or be empty)", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "bf16 or fp32", DefaultValueFactory = _ => "bf16" };
        var command = new Command("export", "export a checkpoint's weights for other tools") { checkpoint, format, output, dtype };
        command.SetAction(parse =>
        {
            if (parse.GetValue(format) != "hf") throw new ArgumentException($"--format {parse.GetValue(format)}: only hf is supported");
            var dir = Path.GetFullPath(parse.GetValue(checkpoint)!);
            var m = CheckpointManifest.Read(dir);
            m.Verify(dir);
            var config = Training.Config.TrainConfigLoader.ModelFromTree(Training.Config.YamlTree.Parse(m.Config, $"{dir}/manifest.json"), $"{dir}/manifest.json");
            using var model = new LanguageModel(config);
            using var flat = new FlatParameters(model, ScalarType.Float32, CPU);
            long count = (long)m.Scalars["flat_count"];
            using (no_grad())
                for (int r = 0; r < m.WorldSize; r++)
                {
                    var file = Safetensors.Open(Path.Combine(dir, $"shard-{r:D5}-of-{m.WorldSize:D5}.safetensors"));
                    long start = count * r / m.WorldSize;
                    using var slice = file.Read("master");
                    flat.Master.narrow(0, start, slice.numel()).copy_(slice);
                }
            var target = parse.GetValue(dtype) == "fp32" ? ScalarType.Float32 : ScalarType.BFloat16;
            HfExport.Write(model, parse.GetValue(output)!, target);
            AnsiConsole.MarkupLineInterpolated($"wrote {parse.GetValue(output)}/{HfExport.ConfigFileName} and {HfExport.WeightsFileName} ({config.Arch}, step {m.Step}, {target})");
            return 0;
        });
        return command;
    }
}
