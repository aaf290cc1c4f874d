using DistTrain.Training;
using DistTrain.Training.Checkpointing;
using DistTrain.Training.Config;
using DistTrain.Training.Snapshots;
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
                var task = ctx.AddTask($"step 0/{config.Train.Steps}", maxValue: config.Train.Steps);
                result = train(new BarObserver(task, config.Train.Steps));
            });
        return result!;
    }

    /// <summary>Plain lines (a worker under `disttrain launch`, whose output is forwarded).</summary>
    public static ITrainingObserver Lines() => new LineObserver();

    static string Describe(StepReport r) =>
        $"step {r.Step,6}  loss {r.Loss,8:F4}  lr {r.Lr:0.00e+00}  {r.TokensPerSecond,9:N0} tok/s" +
        (r.ValLoss is { } v ? $"  val {v:F4}" : "");

    static void DescribeResume(ResumeReport r)
    {
        foreach (var refused in r.Refused) Console.WriteLine($"passed over (checkpoint.fallback): {refused}");
        Console.WriteLine($"resuming from {r.Checkpoint} at step {r.Step}");
        foreach (var p in r.IgnoredPartial) Console.WriteLine($"ignoring {p.Path}: {p.Fate}");
    }

    static void DescribeContinued(string runDirectory, int step, int superseded, string kept) =>
        Console.WriteLine($"continuing run directory {runDirectory} after step {step}: metrics.jsonl goes on from there" +
            (superseded > 0 ? $"; {superseded} logged step(s) past step {step} (trained after the checkpoint, before the run ended) moved to {kept}" : ""));

    static void DescribeCheckpoint(CheckpointReport r)
    {
        if (r.Error is { } error)
            Console.Error.WriteLine($"CHECKPOINT FAILED at step {r.Step}: {error}");
        else
            Console.WriteLine($"checkpoint {r.Dir}: {r.Bytes / 1e6:F1} MB from this rank; training waited {r.StallSeconds:F2} s ({r.WaitSeconds:F2} s for the previous save, {r.CopySeconds:F2} s copying to the host), written in the background in {r.WriteSeconds:F2} s ({r.MegabytesPerSecond:F0} MB/s)");
    }

    static void DescribeSnapshot(SnapshotReport r)
    {
        if (r.VoteError is { } error) Console.Error.WriteLine($"snapshot not committed: {error}; a recovery restores the one before it");
        else Console.WriteLine($"snapshot of step {r.Step} in memory: {r.Bytes / 1e6:F1} MB held by this rank (its slice and its neighbour's); " +
            $"training waited {r.StallSeconds:F3} s ({r.CopySeconds:F3} s copying, the rest for every rank's vote)");
    }

    static void DescribeRestored(SnapshotRestore s) =>
        Console.WriteLine($"restored the in-memory snapshot of step {s.Step} (taken by generation {s.Generation} on {s.WorldSize} ranks) from the workers' memory");

    sealed class LineObserver : ITrainingObserver
    {
        public void OnSnapshot(SnapshotReport report) => DescribeSnapshot(report);
        public void OnSnapshotRestored(SnapshotRestore snapshot) => DescribeRestored(snapshot);
        public void OnCheckpoint(CheckpointReport report) => DescribeCheckpoint(report);
        public void OnResume(ResumeReport resume) => DescribeResume(resume);
        public void OnContinued(string runDirectory, int step, int superseded, string kept) => DescribeContinued(runDirectory, step, superseded, kept);
        public void OnKernels(string description) => Console.WriteLine(description);
        public void OnStart(int totalSteps, string runDirectory) => Console.WriteLine($"run directory: {runDirectory}");
        public void OnReport(StepReport report) => Console.WriteLine(Describe(report));
    }

    /// <summary>The bar reads `step 120/500  loss 3.214  12,345 tok/s`, then the percentage and the ETA.</summary>
    sealed class BarObserver(ProgressTask task, int totalSteps) : ITrainingObserver
    {
        string _latest = "";   // loss and tokens/s of the latest report: they change only every log_interval steps

        public void OnSnapshot(SnapshotReport report) => DescribeSnapshot(report);
        public void OnSnapshotRestored(SnapshotRestore snapshot) => DescribeRestored(snapshot);
        public void OnCheckpoint(CheckpointReport report) => DescribeCheckpoint(report);
        public void OnResume(ResumeReport resume) => DescribeResume(resume);
        public void OnContinued(string runDirectory, int step, int superseded, string kept) => DescribeContinued(runDirectory, step, superseded, kept);
        public void OnKernels(string description) => AnsiConsole.WriteLine(description);
        public void OnStep(int step)
        {
            task.Value = step + 1;
            task.Description = $"step {step + 1}/{totalSteps}{_latest}";
        }
        public void OnReport(StepReport report)
        {
            _latest = $"  loss {report.Loss:F3}  {report.TokensPerSecond:N0} tok/s";
            task.Description = $"step {report.Step}/{totalSteps}{_latest}";
            AnsiConsole.WriteLine(Describe(report));
        }
    }
}
