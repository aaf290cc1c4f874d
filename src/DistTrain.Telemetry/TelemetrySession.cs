using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;
using OpenTelemetry;
using OpenTelemetry.Logs;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace DistTrain.Telemetry;

/// <summary>
/// One process's OpenTelemetry: traces from every "DistTrain.*" ActivitySource plus ASP.NET Core
/// (coordinator RPCs) and HttpClient (worker calls) instrumentation, metrics from every
/// "DistTrain.*" Meter, and an <see cref="ILoggerFactory"/> whose logs carry the active trace.
/// Exporters follow <see cref="ExportPlan"/>; with none configured no provider is built, so
/// spans are never even created. Exporting runs on the SDK's background threads: a slow or
/// absent collector costs a step nothing, and <see cref="Dispose"/> waits for it only briefly.
/// </summary>
public sealed class TelemetrySession : IDisposable
{
    /// <summary>Every DistTrain component's ActivitySource and Meter is named under this prefix.</summary>
    public const string NamePrefix = "DistTrain.";
    static readonly TimeSpan ShutdownWait = TimeSpan.FromSeconds(3);

    readonly TracerProvider? _traces;
    readonly MeterProvider? _metrics;

    TelemetrySession(TracerProvider? traces, MeterProvider? metrics, ILoggerFactory logs, ExportPlan plan) =>
        (_traces, _metrics, Logs, Plan) = (traces, metrics, logs, plan);

    public ILoggerFactory Logs { get; }
    public ExportPlan Plan { get; }

    /// <param name="role">launch, coordinator, worker or train (resource attribute disttrain.role)</param>
    /// <param name="attributes">more resource attributes (job, rank, ...); OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME override them</param>
    /// <param name="warn">where a configuration warning goes (once, at start)</param>
    public static TelemetrySession Start(string role, IReadOnlyDictionary<string, object> attributes, Action<string> warn)
    {
        var plan = ExportPlan.FromEnvironment(Environment.GetEnvironmentVariable);
        foreach (var warning in plan.Warnings) warn(warning);
        var resource = ResourceBuilder.CreateEmpty()
            .AddService("disttrain", serviceInstanceId: $"{Environment.MachineName}/{Environment.ProcessId}")
            .AddAttributes(new Dictionary<string, object>(attributes) { ["disttrain.role"] = role, ["host.name"] = Environment.MachineName })
            .AddTelemetrySdk()
            .AddEnvironmentVariableDetector();   // added last: the user's OTEL_* values win

        TracerProvider? traces = null;
        if (plan.Traces.Any)
        {
            var builder = Sdk.CreateTracerProviderBuilder().SetResourceBuilder(resource)
                .AddSource(NamePrefix + "*")
                .AddAspNetCoreInstrumentation()
                .AddHttpClientInstrumentation();
            if (plan.Traces.Otlp) builder.AddOtlpExporter();
            if (plan.Traces.Console) builder.AddConsoleExporter();
            traces = builder.Build();
        }
        MeterProvider? metrics = null;
        if (plan.Metrics.Any)
        {
            var builder = Sdk.CreateMeterProviderBuilder().SetResourceBuilder(resource).AddMeter(NamePrefix + "*");
            if (plan.Metrics.Otlp) builder.AddOtlpExporter();
            if (plan.Metrics.Console) builder.AddConsoleExporter();
            metrics = builder.Build();
        }
        var logs = LoggerFactory.Create(b =>
        {
            // warnings (a straggler, a lost rank) also reach the terminal, on stderr, one line each
            b.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace)
             .AddSimpleConsole(o => o.SingleLine = true)
             .AddFilter<ConsoleLoggerProvider>(level => level >= LogLevel.Warning);
            if (plan.Logs.Any)
                b.AddOpenTelemetry(o =>
                {
                    o.SetResourceBuilder(resource);
                    o.IncludeFormattedMessage = true;
                    if (plan.Logs.Otlp) o.AddOtlpExporter();
                    if (plan.Logs.Console) o.AddConsoleExporter();
                });
        });
        return new TelemetrySession(traces, metrics, logs, plan);
    }

    /// <summary>Exports what is buffered, waiting at most a few seconds (an unreachable collector never holds the exit).</summary>
    public void Dispose()
    {
        int wait = (int)ShutdownWait.TotalMilliseconds;
        _traces?.ForceFlush(wait);
        _metrics?.ForceFlush(wait);
        Logs.Dispose();
        _traces?.Shutdown(wait);
        _metrics?.Shutdown(wait);
        _traces?.Dispose();
        _metrics?.Dispose();
    }

    /// <summary>A W3C traceparent for <paramref name="context"/> (what a child process or a worker gets to join the trace).</summary>
    public static string TraceParent(ActivityContext context) =>
        context == default ? "" : $"00-{context.TraceId.ToHexString()}-{context.SpanId.ToHexString()}-{((context.TraceFlags & ActivityTraceFlags.Recorded) != 0 ? "01" : "00")}";

    /// <summary>The context a W3C traceparent names, or default when empty or malformed.</summary>
    public static ActivityContext ParseTraceParent(string? traceParent) =>
        !string.IsNullOrEmpty(traceParent) && ActivityContext.TryParse(traceParent, null, out var context) ? context : default;
}
