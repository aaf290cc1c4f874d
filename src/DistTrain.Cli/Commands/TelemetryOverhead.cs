using DistTrain.Training.Config;
using DistTrain.Training.Diagnostics;
using Spectre.Console;

namespace DistTrain.Cli.Commands;

/// <summary>
/// `disttrain bench --telemetry-rounds N`: the same timed steps without and with telemetry (a step
/// span every telemetry.trace_every steps, every metric, exported as the OTEL_* variables say),
/// alternating so that drift of a shared machine hits both alike; reports the medians.
/// </summary>
static class TelemetryOverhead
{
    public static void Measure(TrainConfig options, int warmup, int timed, int rounds)
    {
        using var session = CliTelemetry.Start("bench", new() { ["disttrain.job"] = options.Train.Name });
        if (!session.Plan.Traces.Any && !session.Plan.Metrics.Any)
            AnsiConsole.WriteLine("telemetry: no exporter configured (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER); 'with' only records into idle instruments");
        var off = new List<double>();
        var on = new List<double>();
        for (int round = 0; round < rounds; round++)
        {
            off.Add(TrainingBenchmark.Run(options, warmup, timed, 0, 0, []).StepsPerSecond);
            using var span = CliTelemetry.JobSpan(options.Train.Name, 1);
            on.Add(TrainingBenchmark.Run(options, warmup, timed, 0, 0, [],
                trainer => TrainingTelemetry.For(trainer, options, 0, 1, span?.Context ?? default)).StepsPerSecond);
            AnsiConsole.WriteLine($"telemetry round {round + 1}/{rounds}: {1e3 / off[^1]:F2} ms/step without, {1e3 / on[^1]:F2} ms/step with");
        }
        double without = 1e3 / Median(off), with = 1e3 / Median(on);
        AnsiConsole.WriteLine($"telemetry overhead (median of {rounds} rounds of {timed} steps, trace_every {options.Telemetry.TraceEvery}, " +
            $"traces {(session.Plan.Traces.Otlp ? "otlp" : session.Plan.Traces.Console ? "console" : "off")}, metrics {(session.Plan.Metrics.Otlp ? "otlp" : session.Plan.Metrics.Console ? "console" : "off")}): " +
            $"{without:F2} -> {with:F2} ms/step = {100 * (with - without) / without:+0.00;-0.00}%");
    }

    static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        int n = sorted.Count;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }
}
