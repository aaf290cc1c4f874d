using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Http.Headers;
using DistTrain.Cli.Tests.Otlp.Proto;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Logs;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace DistTrain.Cli.Tests.Otlp;

/// <summary>The receiver against the real OpenTelemetry .NET SDK exporter, in this process, over both protocols.
/// Each test has its own receiver, and its own source, meter and service names.</summary>
public partial class OtlpReceiverTests
{
    static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);
    const int FlushMs = 10_000;

    [Theory]
    [InlineData(OtlpExportProtocol.Grpc, OtlpExportCompression.None)]
    [InlineData(OtlpExportProtocol.HttpProtobuf, OtlpExportCompression.None)]
    [InlineData(OtlpExportProtocol.Grpc, OtlpExportCompression.GZip)]
    [InlineData(OtlpExportProtocol.HttpProtobuf, OtlpExportCompression.GZip)]
    public async Task SpansArriveWithParentChildIdsAttributesAndServiceName(OtlpExportProtocol protocol, OtlpExportCompression compression)
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        var service = $"otlp-spans-{protocol}-{compression}";
        using var source = new ActivitySource($"{service}.source");
        string traceId, parentId, childId;
        using (var tracing = Sdk.CreateTracerProviderBuilder()
            .ConfigureResource(r => r.AddService(service))
            .AddSource(source.Name)
            .AddOtlpExporter(o =>
            {
                PointAt(o, receiver, protocol, "/v1/traces");
                o.Compression = compression;  // what OTEL_EXPORTER_OTLP_COMPRESSION=gzip sets
            })
            .Build())
        {
            using (var parent = source.StartActivity("train.step")!)
            {
                parent.SetTag("step", 3);
                parent.SetTag("loss", 2.5);
                using (var child = source.StartActivity("allreduce", ActivityKind.Client)!)
                {
                    child.SetTag("bucket.bytes", 1L << 20);
                    child.SetTag("backend", "ring");
                    child.AddEvent(new ActivityEvent("bucket.ready"));
                    child.SetStatus(ActivityStatusCode.Error, "peer 1 lost");
                    childId = child.SpanId.ToHexString();
                }
                traceId = parent.TraceId.ToHexString();
                parentId = parent.SpanId.ToHexString();
            }
            Assert.True(tracing.ForceFlush(FlushMs), "ForceFlush timed out");
            await receiver.WaitFor(r => r.Spans.Count(s => s.ServiceName == service) == 2, Wait, "the step and allreduce spans");
        }

        var spans = receiver.Spans.Where(s => s.ServiceName == service).ToDictionary(s => s.Name);
        var step = spans["train.step"];
        var allreduce = spans["allreduce"];
        Assert.All(spans.Values, s => Assert.Equal(Transport(protocol), s.Transport));
        Assert.All(spans.Values, s => Assert.Equal(source.Name, s.Scope));
        Assert.All(spans.Values, s => Assert.Equal(traceId, s.TraceId));
        Assert.Equal(32, traceId.Length);
        Assert.Equal((parentId, ""), (step.SpanId, step.ParentSpanId));
        Assert.Equal((childId, parentId), (allreduce.SpanId, allreduce.ParentSpanId));
        Assert.Equal((ActivityKind?)ActivityKind.Internal, step.Kind);
        Assert.Equal((ActivityKind?)ActivityKind.Client, allreduce.Kind);
        Assert.Equal("3", step.Attributes["step"]);
        Assert.Equal("2.5", step.Attributes["loss"]);
        Assert.Equal("1048576", allreduce.Attributes["bucket.bytes"]);
        Assert.Equal("ring", allreduce.Attributes["backend"]);
        Assert.Equal(["bucket.ready"], allreduce.Events);
        Assert.Equal((ActivityStatusCode.Error, "peer 1 lost"), (allreduce.Status, allreduce.StatusMessage));
        Assert.Equal(ActivityStatusCode.Unset, step.Status);
        // the child lies inside the parent, and both are recent
        Assert.InRange(allreduce.Start, step.Start, step.End);
        Assert.InRange(allreduce.End, allreduce.Start, step.End);
        Assert.InRange(step.Start, DateTimeOffset.UtcNow.AddMinutes(-1), DateTimeOffset.UtcNow);
        Assert.Equal("opentelemetry", step.Resource["telemetry.sdk.name"]);
        Assert.Empty(receiver.Rejected);
    }

    [Theory]
    [InlineData(OtlpExportProtocol.Grpc)]
    [InlineData(OtlpExportProtocol.HttpProtobuf)]
    public async Task MetricsArriveAsCumulativeSumsAndHistogramCountAndSum(OtlpExportProtocol protocol)
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        var service = $"otlp-metrics-{protocol}";
        using var meter = new Meter($"{service}.meter");
        var tokens = meter.CreateCounter<long>("disttrain.tokens", unit: "{token}", description: "tokens trained on");
        var stepTime = meter.CreateHistogram<double>("disttrain.step.duration", unit: "s");
        List<OtlpMetricPoint> points;
        using (var metrics = Sdk.CreateMeterProviderBuilder()
            .ConfigureResource(r => r.AddService(service))
            .AddMeter(meter.Name)
            .AddOtlpExporter((o, reader) =>
            {
                PointAt(o, receiver, protocol, "/v1/metrics");
                // only ForceFlush and shutdown export here (the default interval is 60 s anyway)
                reader.PeriodicExportingMetricReaderOptions.ExportIntervalMilliseconds = 600_000;
            })
            .Build())
        {
            tokens.Add(512, new KeyValuePair<string, object?>("rank", 0));
            tokens.Add(512, new KeyValuePair<string, object?>("rank", 0));
            tokens.Add(256, new KeyValuePair<string, object?>("rank", 1));
            stepTime.Record(0.25);
            stepTime.Record(0.75);
            stepTime.Record(2.0);
            Assert.True(metrics.ForceFlush(FlushMs), "ForceFlush timed out");
            await receiver.WaitFor(r => r.MetricPoints.Count(p => p.ServiceName == service) == 3, Wait,
                "two token points (rank 0 and 1) and one step-duration point");
            points = receiver.MetricPoints.Where(p => p.ServiceName == service).ToList();
        }

        Assert.All(points, p => Assert.Equal(Transport(protocol), p.Transport));
        Assert.All(points, p => Assert.Equal(meter.Name, p.Scope));
        var byRank = points.Where(p => p.Name == "disttrain.tokens").ToDictionary(p => p.Attributes["rank"]);
        Assert.Equal(1024.0, byRank["0"].Value);
        Assert.Equal(256.0, byRank["1"].Value);
        Assert.All(byRank.Values, p =>
        {
            Assert.Equal((OtlpMetricKind.Sum, Proto.AggregationTemporality.Cumulative, true), (p.Kind, p.Temporality, p.IsMonotonic));
            Assert.Equal(("{token}", "tokens trained on"), (p.Unit, p.Description));
        });
        var duration = Assert.Single(points, p => p.Name == "disttrain.step.duration");
        Assert.Equal((OtlpMetricKind.Histogram, "s"), (duration.Kind, duration.Unit));
        Assert.Equal((3L, 3.0), (duration.Count, duration.Sum));
        Assert.Equal(3.0, duration.Value);
        Assert.Empty(duration.Attributes);

        // disposing the provider exports once more: the same cumulative values, so a process that disposes
        // its MeterProvider on exit delivers its last numbers without waiting for the export interval
        var final = receiver.MetricPoints.Where(p => p.ServiceName == service).Skip(3).ToList();
        Assert.Equal(points.Select(p => (p.Name, p.Value, p.Count)).Order(), final.Select(p => (p.Name, p.Value, p.Count)).Order());
    }

    [Theory]
    [InlineData(OtlpExportProtocol.Grpc)]
    [InlineData(OtlpExportProtocol.HttpProtobuf)]
    public async Task ALogRecordInsideASpanCarriesItsTraceAndSpanIds(OtlpExportProtocol protocol)
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        var service = $"otlp-logs-{protocol}";
        using var source = new ActivitySource($"{service}.source");
        var services = new ServiceCollection();
        services.AddLogging(logging => logging.AddOpenTelemetry(o =>
        {
            o.SetResourceBuilder(ResourceBuilder.CreateDefault().AddService(service));
            o.AddOtlpExporter(e => PointAt(e, receiver, protocol, "/v1/logs"));
        }));
        string traceId, spanId;
        using (var provider = services.BuildServiceProvider())
        using (var tracing = Sdk.CreateTracerProviderBuilder()
            .ConfigureResource(r => r.AddService(service))
            .AddSource(source.Name)
            .AddOtlpExporter(o => PointAt(o, receiver, protocol, "/v1/traces"))
            .Build())
        {
            var logger = provider.GetRequiredService<ILoggerFactory>().CreateLogger("DistTrain.Checkpoint");
            using (var save = source.StartActivity("checkpoint.save")!)
            {
                CheckpointSaved(logger, 40);
                traceId = save.TraceId.ToHexString();
                spanId = save.SpanId.ToHexString();
            }
            Assert.True(provider.GetRequiredService<LoggerProvider>().ForceFlush(FlushMs), "log ForceFlush timed out");
            Assert.True(tracing.ForceFlush(FlushMs), "trace ForceFlush timed out");
            await receiver.WaitFor(r => r.LogRecords.Any(l => l.ServiceName == service) && r.Spans.Any(s => s.ServiceName == service),
                Wait, "the checkpoint log record and its span");
        }

        var log = Assert.Single(receiver.LogRecords, l => l.ServiceName == service);
        var span = Assert.Single(receiver.Spans, s => s.ServiceName == service);
        Assert.Equal(Transport(protocol), log.Transport);
        Assert.Equal((traceId, spanId), (log.TraceId, log.SpanId));
        Assert.Equal((span.TraceId, span.SpanId), (log.TraceId, log.SpanId));
        Assert.Equal("DistTrain.Checkpoint", log.Scope);
        Assert.Equal((SeverityNumber.Info, "Information"), (log.Severity, log.SeverityText));
        // the SDK sends the message template as the body and the placeholders as attributes
        Assert.Equal("checkpoint saved at step {Step}", log.Body);
        Assert.Equal("40", log.Attributes["Step"]);
        Assert.InRange(log.Time, span.Start, span.End);
    }

    /// <summary>What a disttrain process will get: the endpoint and protocol from OTEL_* variables, not code.
    /// The SDK reads them through IConfiguration, so keys given there act as the environment would, without
    /// setting variables that the other tests' child processes would inherit.</summary>
    [Theory]
    [InlineData("grpc")]
    [InlineData("http/protobuf")]
    public async Task OtelEnvironmentVariablesAloneReachTheReceiver(string protocol)
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        var service = $"otlp-env-{protocol.Replace('/', '-')}";
        using var source = new ActivitySource($"{service}.source");
        var environment = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            // the base address only: for http/protobuf the SDK appends /v1/traces to the variable's value
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = (protocol == "grpc" ? receiver.GrpcEndpoint : receiver.HttpEndpoint).ToString(),
            ["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol,
            ["OTEL_SERVICE_NAME"] = service,
            ["OTEL_RESOURCE_ATTRIBUTES"] = "disttrain.job=env-test,disttrain.rank=3",
        }).Build();
        using (var tracing = Sdk.CreateTracerProviderBuilder()
            .ConfigureServices(s => s.AddSingleton<IConfiguration>(environment))
            .AddSource(source.Name)
            .AddOtlpExporter()
            .Build())
        {
            source.StartActivity("run")!.Dispose();
            Assert.True(tracing.ForceFlush(FlushMs), "ForceFlush timed out");
            await receiver.WaitFor(r => r.Spans.Any(s => s.ServiceName == service), Wait, $"the span of service {service}");
        }

        var span = Assert.Single(receiver.Spans);
        Assert.Equal(protocol == "grpc" ? OtlpTransport.Grpc : OtlpTransport.HttpProtobuf, span.Transport);
        Assert.Equal(("env-test", "3"), (span.Resource["disttrain.job"], span.Resource["disttrain.rank"]));
    }

    /// <summary>Pins an SDK trait the process tests must live with: a failed export is only an EventSource
    /// event (OpenTelemetry-Exporter-OpenTelemetryProtocol), and ForceFlush still says true.</summary>
    [Fact]
    public async Task AnHttpEndpointSetInCodeWithoutTheSignalPathLosesTheSpansSilently()
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        using var source = new ActivitySource("otlp-no-signal-path.source");
        using var tracing = Sdk.CreateTracerProviderBuilder()
            .AddSource(source.Name)
            .AddOtlpExporter(o => (o.Protocol, o.Endpoint) = (OtlpExportProtocol.HttpProtobuf, receiver.HttpEndpoint))
            .Build();
        source.StartActivity("lost")!.Dispose();

        Assert.True(tracing.ForceFlush(FlushMs));   // the export (a POST to /, answered 404) is over when this returns
        Assert.Empty(receiver.Spans);
        Assert.Empty(receiver.Rejected);              // the 404 came from routing, not from an OTLP route
    }

    [Fact]
    public async Task TheHttpRoutesRefuseJsonAndUnparsableBodiesAndSayWhy()
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        using var http = new HttpClient { BaseAddress = receiver.HttpEndpoint, Timeout = Wait };

        using var json = await http.PostAsync("/v1/traces", new StringContent("{\"resourceSpans\":[]}", null, "application/json"));
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, json.StatusCode);

        var garbage = new ByteArrayContent([0x0a, 0xff, 0xff, 0xff]);  // field 1, a length that runs past the end
        garbage.Headers.ContentType = new MediaTypeHeaderValue("application/x-protobuf");
        using var bad = await http.PostAsync("/v1/metrics", garbage);
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);

        var empty = new ByteArrayContent([]);
        empty.Headers.ContentType = new MediaTypeHeaderValue("application/x-protobuf");
        using var ok = await http.PostAsync("/v1/logs", empty);
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        Assert.Equal("application/x-protobuf", ok.Content.Headers.ContentType?.MediaType);

        Assert.Collection(receiver.Rejected,
            r => Assert.StartsWith("POST /v1/traces: 415 Content-Type 'application/json", r),
            r => Assert.StartsWith("POST /v1/metrics: 400 the body is not a ExportMetricsServiceRequest", r));
        Assert.Empty(receiver.LogRecords);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "checkpoint saved at step {Step}")]
    static partial void CheckpointSaved(ILogger logger, int step);

    /// <summary>Endpoints set in code are used as given: for http/protobuf that must be the full signal path.</summary>
    static void PointAt(OtlpExporterOptions options, OtlpReceiver receiver, OtlpExportProtocol protocol, string signalPath)
    {
        options.Protocol = protocol;
        options.Endpoint = protocol == OtlpExportProtocol.Grpc ? receiver.GrpcEndpoint : new Uri(receiver.HttpEndpoint, signalPath);
    }

    static OtlpTransport Transport(OtlpExportProtocol protocol) =>
        protocol == OtlpExportProtocol.Grpc ? OtlpTransport.Grpc : OtlpTransport.HttpProtobuf;
}
