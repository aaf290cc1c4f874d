using System.CommandLine;
using DistTrain.Cli.Plots;
using DistTrain.Training;
using Spectre.Console;

namespace DistTrain.Cli.Commands;

/// <summary>disttrain plot RUN_DIR... [--output FILE.png] [--metrics loss,tokens_per_s]: the runs' metrics.jsonl as one PNG.</summary>
static class PlotCommand
{
    public static Command Create()
    {
        var runs = new Argument<string[]>("run-dir") { Description = "run directories (runs/NAME-TIMESTAMP) with a metrics.jsonl; a running job's works too", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string?>("--output", "-o") { Description = "the PNG to write, replaced if it exists (default: plot.png in the first run directory)" };
        var metrics = new Option<string>("--metrics")
        {
            Description = $"panels, comma-separated, from {string.Join(", ", PlotMetric.All.Select(m => m.Name))} (loss adds validation loss dashed)",
            DefaultValueFactory = _ => "loss,tokens_per_s",
        };
        var command = new Command("plot", "plot runs' metrics side by side: one PNG, a panel per metric, a line per run") { runs, output, metrics };
        command.SetAction(parse =>
        {
            var panels = PlotMetric.ParseList(parse.GetValue(metrics)!);
            var dirs = parse.GetValue(runs)!.Select(Path.GetFullPath).ToList();
            var read = dirs.Select(d => (Name: Legend(d, dirs), Reports: RunDirectory.ReadMetrics(d))).ToList();
            var path = Path.GetFullPath(parse.GetValue(output) ?? Path.Combine(dirs[0], "plot.png"));
            if (!Directory.Exists(Path.GetDirectoryName(path)))
                throw new DirectoryNotFoundException($"--output {path}: the folder {Path.GetDirectoryName(path)} does not exist; create it or write elsewhere");
            bool replaced = File.Exists(path);
            MetricsPlot.SavePng(read, panels, path);
            AnsiConsole.MarkupLineInterpolated($"wrote {path}{(replaced ? " (replaced the previous one)" : "")}: {string.Join(", ", panels.Select(p => p.Name))} for {read.Count} run(s)");
            return 0;
        });
        return command;
    }

    /// <summary>The run folder's name; the whole path where two runs share a folder name.</summary>
    static string Legend(string dir, IReadOnlyList<string> all)
    {
        var name = Path.GetFileName(Path.TrimEndingDirectorySeparator(dir));
        return all.Count(d => Path.GetFileName(Path.TrimEndingDirectorySeparator(d)) == name) > 1 ? dir : name;
    }
}
