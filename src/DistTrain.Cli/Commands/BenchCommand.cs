using System.CommandLine;
using System.Diagnostics;
using DistTrain.Data;
using DistTrain.Distributed;
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
        var ringWorkers = new Option<int>("--ring-workers") { Description = "also measure the CPU ring all-reduce with this many ranks on loopback (0: skip)", DefaultValueFactory = _ => 0 };
        var command = new Command("bench", "measure training steps/s, reader tokens/s and ring all-reduce bandwidth") { config, set, steps, warmup, readerTokens, ringWorkers };
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

            int ranks = parse.GetValue(ringWorkers);
            if (ranks > 1)
            {
                long[] sizes = [1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20];
                foreach (var (bytes, seconds, busGBps) in RingBenchmark.Run(ranks, sizes, iterations: 5))
                    AnsiConsole.MarkupLineInterpolated($"ring all-reduce, {ranks} ranks on loopback: {bytes >> 20,4} MB in {seconds * 1e3,8:F2} ms = {busGBps:F2} GB/s bus bandwidth");
                // the data-parallel cost per step: the flat fp32 gradient of this model, all-reduced once
                long gradBytes = ModelInfoBytes(options);
                var (_, stepComm, _) = RingBenchmark.Run(ranks, [gradBytes], iterations: 20)[0];
                AnsiConsole.MarkupLineInterpolated($"data-parallel overhead: all-reducing the {gradBytes / 1e6:F2} MB gradient takes {stepComm * 1e3:F2} ms per step with {ranks} ranks, against {1e3 / stepsPerSecond:F1} ms for the step itself ({100 * stepComm * stepsPerSecond:F1}%)");
            }

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

    static long ModelInfoBytes(TrainConfig options)
    {
        using var model = new DistTrain.Model.LanguageModel(options.Model);
        return DistTrain.Model.ModelInfo.Of(model).Total * sizeof(float);
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
