using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DistTrain.Cli.Tests.Otlp;

namespace DistTrain.Cli.Tests;

/// <summary>Real `disttrain launch` jobs exporting to an in-process OTLP receiver: the span tree, metrics, logs and stragglers.</summary>
public class TelemetryTests
{
    static readonly TimeSpan Limit = TimeSpan.FromMinutes(8);   // a hang ends here (before the 10-minute blame-hang timeout); a loaded 2-core machine took over 4 minutes
    static readonly TimeSpan Arrival = TimeSpan.FromSeconds(30);

    // 12 sequences of 64 tokens per step over 2 workers: 6 x 64 = 384 tokens per rank and step
    static string[] Job(string dir, int steps, params string[] more) =>
    [
        "launch", "--manifest", Disttrain.LocalManifest(dir, 2), "--config", "configs/tiny-muddformer.yaml",
        "--set", $"train.steps={steps}", "--set", "train.log_interval=2", "--set", "train.seq_len=64", "--set", "train.global_batch=12",
        "--set", "train.micro_batch=6", "--set", "data.shards=6", "--set", "train.eval_interval=0", "--set", "train.eval_batches=1",
        "--set", "optim.warmup_steps=2", "--set", $"train.run_dir={Path.Combine(dir, "runs")}", .. more,
    ];

    static (string, string)[] Otlp(OtlpReceiver receiver, string protocol) =>
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", (protocol == "grpc" ? receiver.GrpcEndpoint : receiver.HttpEndpoint).ToString()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol), ("OTEL_METRIC_EXPORT_INTERVAL", "500"), ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];

    [Theory]
    [InlineData("grpc")]
    [InlineData("http/protobuf")]
    public async Task ATwoWorkerJobIsOneTraceWithStepsPhasesAndRpcsAndExportsItsMetrics(string protocol)
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        using var dir = new TempFolder();
        var (code, output) = Disttrain.Run(Limit,
            Job(dir.Path, 6, "--set", "telemetry.trace_every=2", "--set", "checkpoint.interval=3", "--set", $"checkpoint.dir={Path.Combine(dir.Path, "ckpt")}"),
            Otlp(receiver, protocol));
        Assert.True(code == 0, output);
        await receiver.WaitFor(r => r.Spans.Any(s => s.Name == "job"), Arrival, "the job span");
        await receiver.WaitFor(r => r.MetricPoints.Any(p => p.Name == "disttrain.worker.heartbeat.age"), Arrival, "the coordinator's gauges");
        var spans = receiver.Spans;

        // one trace: the launcher's job span is the root of every process's spans
        var job = Assert.Single(spans, s => s.Name == "job");
        Assert.Equal("", job.ParentSpanId);
        Assert.Equal("launch", job.Resource["disttrain.role"]);
        Assert.All(spans, s => Assert.Equal(job.TraceId, s.TraceId));
        Assert.Equal(["coordinator", "launch", "worker"], spans.Select(s => s.Resource["disttrain.role"]).Distinct().Order());
        var coordinator = Assert.Single(spans, s => s.Name == "coordinator");
        Assert.Equal(job.SpanId, coordinator.ParentSpanId);
        var workers = spans.Where(s => s.Name == "worker").OrderBy(s => s.Attributes["disttrain.rank"]).ToList();
        Assert.Equal(["0", "1"], workers.Select(w => w.Attributes["disttrain.rank"]));
        Assert.All(workers, w => Assert.Equal(job.SpanId, w.ParentSpanId));

        foreach (var worker in workers)
        {
            // traced steps: every 2nd (1, 3, 5) and every saving step (3, 6)
            var steps = spans.Where(s => s.Name == "step" && s.ParentSpanId == worker.SpanId).ToDictionary(s => int.Parse(s.Attributes["disttrain.step"]));
            Assert.Equal([1, 3, 5, 6], steps.Keys.Order());
            foreach (var (number, step) in steps)
            {
                Assert.Equal("384", step.Attributes["disttrain.tokens"]);
                var phases = spans.Where(s => s.ParentSpanId == step.SpanId).OrderBy(s => s.Start).ToList();
                string[] expected = number is 3 or 6
                    ? ["data_wait", "forward", "backward", "all_reduce", "optimizer", "checkpoint"]
                    : ["data_wait", "forward", "backward", "all_reduce", "optimizer"];
                Assert.Equal(expected, phases.Select(p => p.Name));
                Assert.All(phases, p => Assert.True(p.Start >= step.Start && p.End <= step.End, $"{p.Name} lies outside its step"));
                Assert.True(long.Parse(phases.Single(p => p.Name == "all_reduce").Attributes["disttrain.all_reduce.bytes"]) > 0);
            }
            foreach (var save in new[] { 3, 6 })
            {
                var phase = spans.Single(s => s.Name == "checkpoint" && s.ParentSpanId == steps[save].SpanId);
                var write = Assert.Single(spans, s => s.Name == "checkpoint.write" && s.ParentSpanId == phase.SpanId);
                Assert.True(long.Parse(write.Attributes["disttrain.checkpoint.bytes"]) > 0);
            }
        }

        // coordinator RPCs: server spans in the coordinator, under the calling worker's client span
        var register = spans.Where(s => s.Resource["disttrain.role"] == "coordinator" && s.Kind == ActivityKind.Server && s.Name.Contains("Register")).ToList();
        Assert.Equal(2, register.Count);
        var byId = spans.ToDictionary(s => s.SpanId);
        Assert.All(register, r => Assert.Equal("worker", byId[r.ParentSpanId].Resource["disttrain.role"]));
        Assert.Contains(spans, s => s.Kind == ActivityKind.Server && s.Name.Contains("Heartbeat"));
        Assert.Contains(spans, s => s.Kind == ActivityKind.Server && s.Name.Contains("CheckpointVote"));

        // metrics, with the values the run had
        var points = receiver.MetricPoints;
        double Last(string name, string rank) => points.Where(p => p.Name == name && p.Attributes.GetValueOrDefault("disttrain.rank") == rank).MaxBy(p => p.Time)!.Value;
        foreach (var rank in new[] { "0", "1" })
        {
            Assert.Equal(6 * 384, Last("disttrain.train.tokens", rank));
            var stepTimes = points.Where(p => p.Name == "disttrain.train.step.duration" && p.Attributes["disttrain.rank"] == rank).MaxBy(p => p.Time)!;
            Assert.Equal(6, stepTimes.Count);
            Assert.Equal("s", stepTimes.Unit);
            Assert.True(Last("disttrain.train.all_reduce.size", rank) > 0);
            Assert.True(Last("disttrain.checkpoint.size", rank) > 0);
            Assert.Contains(points, p => p.Name == "disttrain.train.phase.duration" && p.Attributes["disttrain.rank"] == rank && p.Attributes["disttrain.phase"] == "all_reduce");
        }
        var report = File.ReadLines(Directory.GetFiles(Path.Combine(dir.Path, "runs"), "metrics.jsonl", SearchOption.AllDirectories).Single()).Last();
        var logged = JsonDocument.Parse(report).RootElement;
        Assert.Equal(logged.GetProperty("loss").GetDouble(), Last("disttrain.train.loss", "0"), 6);
        Assert.Equal(logged.GetProperty("lr").GetDouble(), Last("disttrain.train.learning_rate", "0"), 9);
        Assert.Equal(["0", "1"], points.Where(p => p.Name == "disttrain.worker.heartbeat.age").Select(p => p.Attributes["disttrain.rank"]).Distinct().Order());

        // logs carry the trace they were written in
        await receiver.WaitFor(r => r.LogRecords.Count(l => l.Body.Contains("joined as rank")) == 2, Arrival, "the workers' join logs");
        Assert.All(receiver.LogRecords.Where(l => l.Body.Contains("joined as rank")), l => Assert.Equal(job.TraceId, l.TraceId));
        Assert.Contains(receiver.LogRecords, l => l.Body.Contains("checkpoint of step 6 committed") && l.TraceId == job.TraceId);
    }

    [Fact]
    public async Task ASlowedRankIsReportedAsAStragglerWithItsRankAndHost()
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        using var dir = new TempFolder();
        // 60 steps: on a loaded 2-core machine a `status` process takes seconds to start, and 30 steps once ended before a poll saw the mark
        string[] args = Job(dir.Path, 60, "--set", "telemetry.straggler_factor=2", "--set", "telemetry.straggler_after_s=1");
        var manifest = args[2];
        var (launch, output) = Disttrain.Start(args, [.. Otlp(receiver, "grpc"), ("DISTTRAIN_FAULT_SLOW_RANK", "1@0.3")]);
        using var _ = launch;
        try
        {
            // while it runs, `disttrain status` marks the slowed rank and only it
            string status = "";
            var until = Stopwatch.StartNew();
            while (!status.Contains("STRAGGLER") && until.Elapsed < TimeSpan.FromSeconds(90) && !launch.HasExited)
            {
                Thread.Sleep(1000);
                var (_, now) = Disttrain.Run(TimeSpan.FromSeconds(60), "status", "--manifest", manifest);
                status = now;
            }
            var marked = status.Split('\n').Where(l => l.Contains("STRAGGLER")).ToList();
            Assert.True(marked.Count == 1 && FirstCell(marked[0]) == "1", $"status:\n{status}\nlaunch:\n{output}");
            Assert.True(launch.WaitForExit(Limit), output.ToString());
        }
        finally { if (!launch.HasExited) launch.Kill(entireProcessTree: true); }
        launch.WaitForExit();
        Assert.True(launch.ExitCode == 0, output.ToString());
        string log = output.ToString();
        Assert.Contains("rank 1 on 127.0.0.1 is a straggler", log);
        Assert.DoesNotContain("rank 0 on 127.0.0.1 is a straggler", log);

        await receiver.WaitFor(r => r.Spans.Any(s => s.Name == "coordinator"), Arrival, "the coordinator span");
        var coordinator = receiver.Spans.Single(s => s.Name == "coordinator");
        int straggler = coordinator.Events.ToList().IndexOf("straggler");
        Assert.True(straggler >= 0, string.Join(", ", coordinator.Events));
        Assert.Equal("1", coordinator.EventAttributes[straggler]["disttrain.rank"]);
        Assert.Equal("127.0.0.1", coordinator.EventAttributes[straggler]["host.name"]);
        Assert.True(double.Parse(coordinator.EventAttributes[straggler]["disttrain.ratio"], CultureInfo.InvariantCulture) >= 2);
        await receiver.WaitFor(r => r.MetricPoints.Any(p => p.Name == "disttrain.worker.stragglers"), Arrival, "the straggler counter");
        Assert.Equal(["1"], receiver.MetricPoints.Where(p => p.Name == "disttrain.worker.stragglers").Select(p => p.Attributes["disttrain.rank"]).Distinct());
        var points = receiver.MetricPoints.Where(p => p.Name == "disttrain.worker.lateness").GroupBy(p => p.Attributes["disttrain.rank"]).ToDictionary(g => g.Key, g => g.ToList());
        // the largest over the run: on a loaded machine the last export can fall on a step where rank 0 was slow as well (0.18 once)
        double late1 = points["1"].Max(p => p.Value), last0 = points["0"].MaxBy(p => p.Time)!.Value;
        Assert.True(late1 > 0.2, $"rank 1 lateness at most {late1} (0.3 s injected per step)");
        Assert.True(last0 < 0, $"rank 0 lateness {last0}");
    }

    static string FirstCell(string tableRow) => tableRow.Split(['│', '|'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)[0];
}

/// <summary>Telemetry configuration mistakes and an absent collector never stop training.</summary>
public class TelemetryConfigurationTests
{
    static readonly TimeSpan Limit = TimeSpan.FromMinutes(3);

    static string[] Train(string dir) =>
        ["train", "--config", "configs/tiny-transformerpp.yaml", "--set", "train.steps=3", "--set", "train.log_interval=1",
         "--set", "train.eval_interval=0", "--set", "train.eval_batches=1", "--set", $"train.run_dir={dir}"];

    [Fact]
    public void AMalformedEndpointGivesOneWarningNamingTheVariableAndTrainingGoesOn()
    {
        using var dir = new TempFolder();
        var (code, output) = Disttrain.Run(Limit, Train(dir.Path), ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"));
        Assert.True(code == 0, output);
        var warnings = output.Split('\n').Where(l => l.StartsWith("warning:")).ToList();
        var warning = Assert.Single(warnings);
        Assert.Contains("OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4317' is not an http:// or https:// URL", warning);
        Assert.Contains("training loss", output);
    }

    [Theory]
    [InlineData("grpc")]
    [InlineData("http/protobuf")]
    public void AnUnreachableCollectorNeitherFailsNorStopsTraining(string protocol)
    {
        using var dir = new TempFolder();
        var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        int closed = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var (code, output) = Disttrain.Run(Limit, Train(dir.Path),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", $"http://127.0.0.1:{closed}"), ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol), ("OTEL_METRIC_EXPORT_INTERVAL", "200"));
        Assert.True(code == 0, output);
        Assert.DoesNotContain("warning:", output);
        Assert.Equal(3, File.ReadLines(Directory.GetFiles(dir.Path, "metrics.jsonl", SearchOption.AllDirectories).Single()).Count());
    }
}
