using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using DistTrain.Cli.Tests.Otlp.Proto;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;

namespace DistTrain.Cli.Tests.Otlp;

/// <summary>
/// A real OTLP endpoint inside the test process: OTLP/gRPC on <see cref="GrpcEndpoint"/> and OTLP/HTTP
/// (protobuf bodies, POST /v1/traces, /v1/metrics, /v1/logs) on <see cref="HttpEndpoint"/>, both on
/// 127.0.0.1 with ports the system picks. What arrives is kept as flat records for assertions.
/// </summary>
/// <remarks>
/// Point a process at it with OTEL_EXPORTER_OTLP_ENDPOINT = <see cref="GrpcEndpoint"/> (protocol grpc, the
/// default) or = <see cref="HttpEndpoint"/> with OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf: the SDK appends
/// /v1/&lt;signal&gt; to the environment's endpoint for HTTP, but not to one set in code.
/// </remarks>
sealed class OtlpReceiver : IAsyncDisposable
{
    readonly ConcurrentQueue<OtlpSpan> spans = new();
    readonly ConcurrentQueue<OtlpMetricPoint> metricPoints = new();
    readonly ConcurrentQueue<OtlpLogRecord> logRecords = new();
    readonly ConcurrentQueue<string> rejected = new();
    WebApplication? app;

    OtlpReceiver() { }

    /// <summary>http://127.0.0.1:port for OTLP/gRPC: cleartext HTTP/2 (h2c, prior knowledge) only.</summary>
    public Uri GrpcEndpoint { get; private set; } = null!;

    /// <summary>http://127.0.0.1:port for OTLP/HTTP: HTTP/1.1; the routes are /v1/traces, /v1/metrics, /v1/logs.</summary>
    public Uri HttpEndpoint { get; private set; } = null!;

    /// <summary>Snapshots, in arrival order; safe to read while exports come in.</summary>
    public IReadOnlyList<OtlpSpan> Spans => spans.ToArray();
    public IReadOnlyList<OtlpMetricPoint> MetricPoints => metricPoints.ToArray();
    public IReadOnlyList<OtlpLogRecord> LogRecords => logRecords.ToArray();

    /// <summary>OTLP/HTTP requests answered with an error, each as "POST /v1/traces: 415 ...".</summary>
    public IReadOnlyList<string> Rejected => rejected.ToArray();

    public static async Task<OtlpReceiver> StartAsync(CancellationToken cancellationToken = default)
    {
        var receiver = new OtlpReceiver();
        // empty builder: no configuration from the environment, no logging providers, no appsettings
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        ListenOptions? grpc = null, http = null;
        builder.WebHost.UseKestrelCore().ConfigureKestrel(kestrel =>
        {
            // cleartext HTTP/2 needs prior knowledge, which Kestrel serves only on an Http2-only endpoint
            kestrel.Listen(IPAddress.Loopback, 0, o => { o.Protocols = HttpProtocols.Http2; grpc = o; });
            kestrel.Listen(IPAddress.Loopback, 0, o => { o.Protocols = HttpProtocols.Http1; http = o; });
        });
        builder.Services.AddRouting();
        builder.Services.AddGrpc();
        builder.Services.AddSingleton(receiver);

        var app = builder.Build();
        app.MapGrpcService<TraceReceiver>();
        app.MapGrpcService<MetricsReceiver>();
        app.MapGrpcService<LogsReceiver>();
        app.MapPost("/v1/traces", OtlpHttp.Route(receiver, ExportTraceServiceRequest.Parser, receiver.Receive, new ExportTraceServiceResponse()));
        app.MapPost("/v1/metrics", OtlpHttp.Route(receiver, ExportMetricsServiceRequest.Parser, receiver.Receive, new ExportMetricsServiceResponse()));
        app.MapPost("/v1/logs", OtlpHttp.Route(receiver, ExportLogsServiceRequest.Parser, receiver.Receive, new ExportLogsServiceResponse()));
        await app.StartAsync(cancellationToken);

        // Kestrel writes the bound endpoint (with the real port) back into the listen options
        receiver.app = app;
        receiver.GrpcEndpoint = new Uri($"http://127.0.0.1:{grpc!.IPEndPoint!.Port}");
        receiver.HttpEndpoint = new Uri($"http://127.0.0.1:{http!.IPEndPoint!.Port}");
        return receiver;
    }

    /// <summary>Polls <paramref name="condition"/> until it holds; on timeout throws with what did arrive.</summary>
    public async Task WaitFor(Func<OtlpReceiver, bool> condition, TimeSpan timeout, string? what = null)
    {
        var clock = Stopwatch.StartNew();
        while (!condition(this))
        {
            if (clock.Elapsed > timeout)
                throw new TimeoutException($"OTLP receiver: waited {timeout.TotalSeconds:0.#} s for {what ?? "the condition"}; received {Describe()}");
            await Task.Delay(TimeSpan.FromMilliseconds(20));
        }
    }

    /// <summary>Forgets everything received so far.</summary>
    public void Clear()
    {
        spans.Clear();
        metricPoints.Clear();
        logRecords.Clear();
        rejected.Clear();
    }

    /// <summary>A one-paragraph account of what arrived, for failure messages.</summary>
    public string Describe()
    {
        static string Names(IEnumerable<string> names) =>
            string.Join(", ", names.GroupBy(n => n).Select(g => g.Count() == 1 ? g.Key : $"{g.Key} x{g.Count()}"));
        var spans = Spans;
        var points = MetricPoints;
        var logs = LogRecords;
        var rejected = Rejected;
        return $"{spans.Count} spans [{Names(spans.Select(s => $"{s.ServiceName}/{s.Name}"))}]; " +
               $"{points.Count} metric points [{Names(points.Select(p => $"{p.ServiceName}/{p.Name}"))}]; " +
               $"{logs.Count} log records [{Names(logs.Select(l => $"{l.ServiceName}/{l.Scope}"))}]; " +
               $"{rejected.Count} rejected requests" + (rejected.Count > 0 ? ": " + string.Join("; ", rejected) : "");
    }

    internal void Receive(ExportTraceServiceRequest request, OtlpTransport transport)
    {
        foreach (var span in OtlpFlatten.Spans(request, transport)) spans.Enqueue(span);
    }

    internal void Receive(ExportMetricsServiceRequest request, OtlpTransport transport)
    {
        foreach (var point in OtlpFlatten.MetricPoints(request, transport)) metricPoints.Enqueue(point);
    }

    internal void Receive(ExportLogsServiceRequest request, OtlpTransport transport)
    {
        foreach (var log in OtlpFlatten.LogRecords(request, transport)) logRecords.Enqueue(log);
    }

    internal void Reject(string request) => rejected.Enqueue(request);

    public async ValueTask DisposeAsync()
    {
        if (app is null) return;
        // a sender still holding a connection must not keep the test waiting
        using (var stop = new CancellationTokenSource(TimeSpan.FromSeconds(5)))
            await app.StopAsync(stop.Token);
        await app.DisposeAsync();
        app = null;
    }
}
