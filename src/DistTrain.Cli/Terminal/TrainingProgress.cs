using DistTrain.Training;
using DistTrain.Training.Config;
using Spectre.Console;

namespace DistTrain.Cli.Terminal;

/// <summary>
/// A live progress bar on a terminal; on a pipe or in CI, one plain line per logged step.
/// Either way every logged step prints its loss, so a falling loss is visible.
/// </summary>
static class TrainingProgress
{
    public static TrainResult Run(TrainConfig config, Func<ITrainingObserver, TrainResult> train)
    {
        AnsiConsole.MarkupLineInterpolated($"[bold]{config.Model.Arch}[/] dim {config.Model.Dim} x {config.Model.NLayer} layers, {config.Train.Precision} on {config.Train.Device}, {config.Train.Steps} steps of {DataParallelPlan.For(config, 1).GlobalBatch} x {config.Train.SeqLen} tokens");
        if (!AnsiConsole.Profile.Capabilities.Interactive || Console.IsOutputRedirected)
            return train(new LineObserver());
        TrainResult? result = null;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("training", maxValue: config.Train.Steps);
                result = train(new BarObserver(task));
            });
        return result!;
    }

    /// <summary>Plain lines (a worker under `disttrain launch`, whose output is forwarded).</summary>
    public static ITrainingObserver Lines() => new LineObserver();

    static string Describe(StepReport r) =>
        $"step {r.Step,6}  loss {r.Loss,8:F4}  lr {r.Lr:0.00e+00}  {r.TokensPerSecond,9:N0} tok/s" +
        (r.ValLoss is { } v ? $"  val {v:F4}" : "");

    static void DescribeResume(string checkpoint, int step, IReadOnlyList<string> ignoredPartial)
    {
        Console.WriteLine($"resuming from {checkpoint} at step {step}");
        foreach (var p in ignoredPartial) Console.WriteLine($"ignoring {p}: an interrupted save (no complete manifest); it is removed at the next save");
    }

    static void DescribeCheckpoint(string checkpoint, long bytes, double seconds) =>
        Console.WriteLine($"checkpoint {checkpoint}: {bytes / 1e6:F1} MB from this rank in {seconds:F2} s ({bytes / 1e6 / seconds:F0} MB/s; training waited {seconds:F2} s)");

    sealed class LineObserver : ITrainingObserver
    {
        public void OnCheckpoint(string checkpoint, long bytes, double seconds) => DescribeCheckpoint(checkpoint, bytes, seconds);
        public void OnResume(string checkpoint, int step, IReadOnlyList<string> ignoredPartial) => DescribeResume(checkpoint, step, ignoredPartial);
        public void OnStart(int totalSteps, string runDirectory) => Console.WriteLine($"run directory: {runDirectory}");
        public void OnReport(StepReport report) => Console.WriteLine(Describe(report));
    }

    sealed class BarObserver(ProgressTask task) : ITrainingObserver
    {
        public void OnCheckpoint(string checkpoint, long bytes, double seconds) => DescribeCheckpoint(checkpoint, bytes, seconds);
        public void OnResume(string checkpoint, int step, IReadOnlyList<string> ignoredPartial) => DescribeResume(checkpoint, step, ignoredPartial);
        public void OnStep(int step) => task.Value = step + 1;
        public void OnReport(StepReport report)
        {
            task.Description = $"loss {report.Loss:F3}";
            AnsiConsole.WriteLine(Describe(report));
        }
    }
}
