using System.Diagnostics;
using DistTrain.Telemetry;

namespace DistTrain.Cli.Commands;

/// <summary>Each command's OpenTelemetry session (configured by the OTEL_* environment) and the span of a job started here.</summary>
static class CliTelemetry
{
    public const string Name = "DistTrain.Cli";
    public static readonly ActivitySource Source = new(Name);

    public static TelemetrySession Start(string role, Dictionary<string, object> attributes) =>
        TelemetrySession.Start(role, attributes, warning => Console.Error.WriteLine($"warning: {warning}"));

    /// <summary>The job's root span (for `disttrain train`, and `disttrain launch` on the coordinator's node).</summary>
    public static Activity? JobSpan(string job, int worldSize) =>
        Source.StartActivity("job", ActivityKind.Internal, parentContext: default)?.SetTag("disttrain.job", job).SetTag("disttrain.world_size", worldSize);
}
