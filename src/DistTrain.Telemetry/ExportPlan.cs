namespace DistTrain.Telemetry;

/// <summary>Where one signal (traces, metrics or logs) goes.</summary>
public sealed record SignalExport(bool Otlp, bool Console)
{
    public bool Any => Otlp || Console;
}

/// <summary>
/// What the standard OpenTelemetry environment variables ask for, checked before the SDK sees them:
/// OTEL_SDK_DISABLED; OTEL_{TRACES,METRICS,LOGS}_EXPORTER (otlp, console, none; default otlp when an
/// OTLP endpoint is set, otherwise nothing is exported); OTEL_EXPORTER_OTLP[_{SIGNAL}]_ENDPOINT and
/// _PROTOCOL (grpc or http/protobuf). A bad value drops that exporter with one warning; it never stops a run.
/// </summary>
public sealed record ExportPlan(SignalExport Traces, SignalExport Metrics, SignalExport Logs, IReadOnlyList<string> Warnings)
{
    public bool Any => Traces.Any || Metrics.Any || Logs.Any;

    public static ExportPlan FromEnvironment(Func<string, string?> env)
    {
        var warnings = new List<string>();
        void Warn(string message) { if (!warnings.Contains(message)) warnings.Add(message); }
        if (string.Equals(env("OTEL_SDK_DISABLED")?.Trim(), "true", StringComparison.OrdinalIgnoreCase))
            return new ExportPlan(new(false, false), new(false, false), new(false, false), []);

        SignalExport Signal(string signal)
        {
            string Var(string name) => $"OTEL_EXPORTER_OTLP_{signal}_{name}";
            string? Value(string name) => NonEmpty(env(Var(name))) ?? NonEmpty(env($"OTEL_EXPORTER_OTLP_{name}"));
            string Which(string name) => NonEmpty(env(Var(name))) is not null ? Var(name) : $"OTEL_EXPORTER_OTLP_{name}";
            string What(string name) => Which(name) == Var(name) ? $"{signal.ToLowerInvariant()} are" : "telemetry is";   // one warning for a shared variable

            var endpoint = Value("ENDPOINT");
            var chosen = NonEmpty(env($"OTEL_{signal}_EXPORTER")) ?? (endpoint is null ? "none" : "otlp");
            bool otlp = false, console = false;
            foreach (var name in chosen.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                switch (name.ToLowerInvariant())
                {
                    case "otlp": otlp = true; break;
                    case "console": console = true; break;
                    case "none": break;
                    default: Warn($"OTEL_{signal}_EXPORTER: '{name}' is not an exporter DistTrain has; use otlp, console or none"); break;
                }
            }
            if (otlp && endpoint is not null && !IsHttpUrl(endpoint))
            {
                Warn($"{Which("ENDPOINT")}: '{endpoint}' is not an http:// or https:// URL (for example http://localhost:4317 for grpc, http://localhost:4318 for http/protobuf); {What("ENDPOINT")} not exported over OTLP, training goes on");
                otlp = false;
            }
            var protocol = Value("PROTOCOL");
            if (otlp && protocol is not null && protocol is not ("grpc" or "http/protobuf"))
            {
                Warn($"{Which("PROTOCOL")}: '{protocol}' is not supported; use grpc or http/protobuf; {What("PROTOCOL")} not exported over OTLP, training goes on");
                otlp = false;
            }
            return new SignalExport(otlp, console);
        }

        return new ExportPlan(Signal("TRACES"), Signal("METRICS"), Signal("LOGS"), warnings);
    }

    static string? NonEmpty(string? value) => string.IsNullOrWhiteSpace(value) ? null : value.Trim();

    static bool IsHttpUrl(string value) =>
        Uri.TryCreate(value, UriKind.Absolute, out var uri) && (uri.Scheme == Uri.UriSchemeHttp || uri.Scheme == Uri.UriSchemeHttps) && uri.Host.Length > 0;
}
