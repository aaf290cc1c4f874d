using System.CommandLine;
using System.Diagnostics;
using DistTrain.Data;
using DistTrain.Distributed;
using DistTrain.Training;
using DistTrain.Training.Config;
using DistTrain.Training.Diagnostics;
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
        var profileSteps = new Option<int>("--profile-steps") { Description = "steps after the timed ones whose phases are timed (the GPU synchronises at each phase boundary there)", DefaultValueFactory = _ => 5 };
        var peakTflops = new Option<double>("--peak-tflops") { Description = "the device's dense bf16 peak for MFU (default: known from the GPU's name; H100/H200 989.4)", DefaultValueFactory = _ => 0 };
        var fitMicroBatches = new Option<int[]?>("--fit-micro-batches") { Description = "also find the largest of these micro-batch sizes whose training step fits in device memory", AllowMultipleArgumentsPerToken = true };
        var json = new Option<string?>("--json") { Description = "also write the results as JSON to this file" };
        var telemetry = new Option<int>("--telemetry-rounds") { Description = "also measure telemetry's cost: this many rounds of the timed steps without and with it (spans every telemetry.trace_every steps, all metrics, exported as the OTEL_* variables say)", DefaultValueFactory = _ => 0 };
        var command = new Command("bench", "measure training throughput, MFU, device memory and the step's phases; reader tokens/s; ring all-reduce bandwidth")
            { config, set, steps, warmup, profileSteps, peakTflops, fitMicroBatches, json, telemetry, readerTokens, ringWorkers };
        command.SetAction(parse =>
        {
            int timed = parse.GetValue(steps), untimed = parse.GetValue(warmup), profiled = parse.GetValue(profileSteps);
            if (untimed < 1 || timed < 1) throw new ConfigException("bench: --warmup and --steps must be at least 1 (the first steps allocate and are never timed)");
            var overrides = parse.GetValue(set)!.Concat([$"train.steps={timed + untimed + profiled}", $"train.log_interval={timed + untimed}", "train.eval_interval=0",
                "train.eval_batches=0", "optim.warmup_steps=0", "train.run_dir=" + Path.Combine(Path.GetTempPath(), "disttrain-bench")]).ToArray();
            var options = TrainConfigLoader.Load(parse.GetValue(config)!, overrides);
            var result = TrainingBenchmark.Run(options, untimed, timed, profiled, parse.GetValue(peakTflops) * 1e12, parse.GetValue(fitMicroBatches) ?? []);
            foreach (var line in result.Describe()) AnsiConsole.WriteLine(line);
            if (parse.GetValue(json) is { } path) File.WriteAllText(path, result.ToJson());
            double stepsPerSecond = result.StepsPerSecond;
            if (parse.GetValue(telemetry) is > 0 and var rounds) TelemetryOverhead.Measure(options, untimed, timed, rounds);

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
}
