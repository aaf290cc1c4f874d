using System.CommandLine;
using DistTrain.Cli.Terminal;
using DistTrain.Training;
using DistTrain.Training.Config;
using DistTrain.Training.Diagnostics;
using DistTrain.Training.Stopping;
using Spectre.Console;

namespace DistTrain.Cli.Commands;

/// <summary>disttrain train --config C [--set k=v ...]: one process, world size 1.</summary>
static class TrainCommand
{
    public static Command Create()
    {
        var config = CommonOptions.Config();
        var set = CommonOptions.Set();
        var resume = CommonOptions.Resume();
        var dryRun = new Option<bool>("--dry-run") { Description = "check the config, print the resolved config, parameters, tokens per step, the data and a memory estimate per activation-checkpointing policy; train nothing" };
        var command = new Command("train", "train a model on one process (world size 1)") { config, set, dryRun };
        resume.AddTo(command);
        command.SetAction((parse, ct) =>
        {
            var options = TrainConfigLoader.Load(parse.GetValue(config)!, CommonOptions.Overrides(parse, set, resume));
            if (parse.GetValue(dryRun)) return Task.FromResult(DryRun.Print(options));
            using var telemetry = CliTelemetry.Start("train", new() { ["disttrain.job"] = options.Train.Name });
            using var span = CliTelemetry.JobSpan(options.Train.Name, 1);
            var gate = new StopGate();
            using var signals = new StopSignals(new StopRequest(), "stopping after the current step, with a checkpoint");
            signals.Stop.Requested.ContinueWith(_ => gate.StopAfterCurrentStep(), TaskScheduler.Default);
            using var trainer = new Trainer(options, stop: gate);
            var steps = TrainingTelemetry.For(trainer, options, 0, 1, span?.Context ?? default);
            var result = TrainingProgress.Run(options, observer => trainer.Run(new Observers(observer, steps), ct));
            if (result.Stopped is { } stopped)
            {
                Console.WriteLine(ResumeCommand.StoppedLine(stopped.Step, stopped.Checkpoint));
                return Task.FromResult(signals.Stop.ExitCode);
            }
            AnsiConsole.MarkupLineInterpolated($"training loss {LossSummary.Line(result)}");
            if (result.InitialValLoss is { } before && result.Reports[^1].ValLoss is { } after)
                AnsiConsole.MarkupLineInterpolated($"validation loss {before:F4} before training -> {after:F4}");
            AnsiConsole.MarkupLineInterpolated($"run directory: [bold]{result.RunDirectory}[/]");
            return Task.FromResult(0);
        });
        return command;
    }
}
