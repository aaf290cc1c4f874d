using System.CommandLine;
using System.Diagnostics;
using DistTrain.Data;
using DistTrain.Training;
using DistTrain.Training.Config;
using Spectre.Console;

namespace DistTrain.Cli.Commands;

/// <summary>
/// disttrain bench --config C: training steps/s and tokens/s after warmup, and the Parquet
/// reader's tokens/s on the config's training data. A benchmark reports numbers; it asserts nothing.
/// </summary>
static class BenchCommand
{
    public static Command Create()
    {
        var config = CommonOptions.Config();
        var set = CommonOptions.Set();
        var steps = new Option<int>("--steps") { Description = "timed training steps", DefaultValueFactory = _ => 20 };
        var warmup = new Option<int>("--warmup") { Description = "untimed steps first", DefaultValueFactory = _ => 3 };
        var readerTokens = new Option<long>("--reader-tokens") { Description = "tokens for the reader benchmark (0: skip)", DefaultValueFactory = _ => 20_000_000 };
        var command = new Command("bench", "measure training steps/s and reader tokens/s") { config, set, steps, warmup, readerTokens };
        command.SetAction(parse =>
        {
            int timed = parse.GetValue(steps), untimed = parse.GetValue(warmup);
            var overrides = parse.GetValue(set)!.Concat([$"train.steps={timed + untimed}", $"train.log_interval={timed + untimed}", "train.eval_interval=0", "optim.warmup_steps=0", "train.run_dir=" + Path.Combine(Path.GetTempPath(), "disttrain-bench")]);
            var options = TrainConfigLoader.Load(parse.GetValue(config)!, overrides);
            var stepWatch = new StepClock(untimed);
            using (var trainer = new Trainer(options))
                trainer.Run(stepWatch);
            long tokensPerStep = (long)options.Train.MicroBatch * options.Train.GradAccum * options.Train.SeqLen;
            double stepsPerSecond = timed / stepWatch.Seconds;
            AnsiConsole.MarkupLineInterpolated($"train: {options.Model.Arch} {options.Train.Precision} on {options.Train.Device}, {Environment.ProcessorCount} cores: {stepsPerSecond:F2} steps/s, {stepsPerSecond * tokensPerStep:N0} tokens/s ({timed} steps after {untimed} warmup)");

            long n = parse.GetValue(readerTokens);
            if (n > 0)
            {
                var (tokens, seconds) = ReaderBenchmark.Run(DatasetFiles.Resolve(options.Data.Train), options.Train.SeqLen, options.Data.EndOfText, options.Model.VocabSize, n);
                AnsiConsole.MarkupLineInterpolated($"reader: {tokens:N0} tokens in {seconds:F2} s = {tokens / seconds:N0} tokens/s");
            }
            return 0;
        });
        return command;
    }

    /// <summary>Times the steps after the first <c>warmup</c>; the step's host sync at the end of the run makes the last timestamp honest.</summary>
    sealed class StepClock(int warmup) : ITrainingObserver
    {
        long _start;
        public double Seconds { get; private set; }
        public void OnStep(int step) { if (step == warmup - 1) _start = Stopwatch.GetTimestamp(); }
        public void OnReport(StepReport report) => Seconds = Stopwatch.GetElapsedTime(_start).TotalSeconds;
    }
}
