using System.Diagnostics;
using System.Globalization;
using DistTrain.Cli.Tests.Otlp.Proto;
using Google.Protobuf;
using Google.Protobuf.Collections;

namespace DistTrain.Cli.Tests.Otlp;

/// <summary>How a request reached the receiver: OTLP/gRPC or OTLP/HTTP with a protobuf body.</summary>
enum OtlpTransport { Grpc, HttpProtobuf }

enum OtlpMetricKind { Gauge, Sum, Histogram, Unsupported }

/// <summary>One received span. Ids are lowercase hex ("" where absent: a root span's parent);
/// attribute values are rendered as invariant strings (see <see cref="OtlpFlatten.Render"/>).</summary>
sealed record OtlpSpan(
    OtlpTransport Transport,
    string ServiceName,
    IReadOnlyDictionary<string, string> Resource,
    string Scope,
    string TraceId,
    string SpanId,
    string ParentSpanId,
    string Name,
    ActivityKind? Kind,
    IReadOnlyDictionary<string, string> Attributes,
    IReadOnlyList<string> Events,
    DateTimeOffset Start,
    DateTimeOffset End,
    ActivityStatusCode Status,
    string StatusMessage)
{
    /// <summary>Each event's attributes, in the order of <see cref="Events"/>.</summary>
    public IReadOnlyList<IReadOnlyDictionary<string, string>> EventAttributes { get; init; } = [];
}

/// <summary>One received data point. <see cref="Value"/> is a gauge's or sum's number, or a histogram's sum
/// (NaN where the sender left it out); <see cref="Count"/> and <see cref="Sum"/> are set for histograms only.
/// An exporter that sends another point kind (exponential histogram, summary) shows up as one
/// <see cref="OtlpMetricKind.Unsupported"/> point per metric, so its name is still seen.</summary>
sealed record OtlpMetricPoint(
    OtlpTransport Transport,
    string ServiceName,
    IReadOnlyDictionary<string, string> Resource,
    string Scope,
    string Name,
    string Unit,
    string Description,
    OtlpMetricKind Kind,
    AggregationTemporality Temporality,
    bool IsMonotonic,
    IReadOnlyDictionary<string, string> Attributes,
    double Value,
    long? Count,
    double? Sum,
    DateTimeOffset Time);

/// <summary>One received log record; <see cref="Scope"/> is the logger's category for .NET senders.</summary>
sealed record OtlpLogRecord(
    OtlpTransport Transport,
    string ServiceName,
    IReadOnlyDictionary<string, string> Resource,
    string Scope,
    string Body,
    SeverityNumber Severity,
    string SeverityText,
    string TraceId,
    string SpanId,
    IReadOnlyDictionary<string, string> Attributes,
    DateTimeOffset Time);

/// <summary>Export requests -> flat records, one per span, data point or log record.</summary>
static class OtlpFlatten
{
    public static IEnumerable<OtlpSpan> Spans(ExportTraceServiceRequest request, OtlpTransport transport) =>
        from resourceSpans in request.ResourceSpans
        let resource = Attributes(resourceSpans.Resource?.Attributes)
        from scopeSpans in resourceSpans.ScopeSpans
        from span in scopeSpans.Spans
        select new OtlpSpan(
            transport, ServiceName(resource), resource, scopeSpans.Scope?.Name ?? "",
            Hex(span.TraceId), Hex(span.SpanId), Hex(span.ParentSpanId), span.Name, Kind(span.Kind),
            Attributes(span.Attributes), span.Events.Select(e => e.Name).ToArray(),
            Time(span.StartTimeUnixNano), Time(span.EndTimeUnixNano),
            StatusCode(span.Status?.Code ?? Proto.Status.Types.StatusCode.Unset), span.Status?.Message ?? "")
        {
            EventAttributes = span.Events.Select(e => Attributes(e.Attributes)).ToArray(),
        };

    public static IEnumerable<OtlpMetricPoint> MetricPoints(ExportMetricsServiceRequest request, OtlpTransport transport)
    {
        foreach (var resourceMetrics in request.ResourceMetrics)
        {
            var resource = Attributes(resourceMetrics.Resource?.Attributes);
            foreach (var scopeMetrics in resourceMetrics.ScopeMetrics)
                foreach (var metric in scopeMetrics.Metrics)
                {
                    OtlpMetricPoint Point(OtlpMetricKind kind, AggregationTemporality temporality, bool monotonic,
                        RepeatedField<KeyValue>? attributes, double value, long? count, double? sum, ulong time) =>
                        new(transport, ServiceName(resource), resource, scopeMetrics.Scope?.Name ?? "",
                            metric.Name, metric.Unit, metric.Description, kind, temporality, monotonic,
                            Attributes(attributes), value, count, sum, Time(time));

                    switch (metric.DataCase)
                    {
                        case Metric.DataOneofCase.Gauge:
                            foreach (var p in metric.Gauge.DataPoints)
                                yield return Point(OtlpMetricKind.Gauge, AggregationTemporality.Unspecified, false,
                                    p.Attributes, Number(p), null, null, p.TimeUnixNano);
                            break;
                        case Metric.DataOneofCase.Sum:
                            foreach (var p in metric.Sum.DataPoints)
                                yield return Point(OtlpMetricKind.Sum, metric.Sum.AggregationTemporality, metric.Sum.IsMonotonic,
                                    p.Attributes, Number(p), null, null, p.TimeUnixNano);
                            break;
                        case Metric.DataOneofCase.Histogram:
                            foreach (var p in metric.Histogram.DataPoints)
                            {
                                double? sum = p.HasSum ? p.Sum : null;
                                yield return Point(OtlpMetricKind.Histogram, metric.Histogram.AggregationTemporality, false,
                                    p.Attributes, sum ?? double.NaN, (long)p.Count, sum, p.TimeUnixNano);
                            }
                            break;
                        default:
                            yield return Point(OtlpMetricKind.Unsupported, AggregationTemporality.Unspecified, false,
                                null, double.NaN, null, null, 0);
                            break;
                    }
                }
        }
    }

    public static IEnumerable<OtlpLogRecord> LogRecords(ExportLogsServiceRequest request, OtlpTransport transport) =>
        from resourceLogs in request.ResourceLogs
        let resource = Attributes(resourceLogs.Resource?.Attributes)
        from scopeLogs in resourceLogs.ScopeLogs
        from log in scopeLogs.LogRecords
        select new OtlpLogRecord(
            transport, ServiceName(resource), resource, scopeLogs.Scope?.Name ?? "",
            Render(log.Body), log.SeverityNumber, log.SeverityText, Hex(log.TraceId), Hex(log.SpanId),
            Attributes(log.Attributes), Time(log.TimeUnixNano != 0 ? log.TimeUnixNano : log.ObservedTimeUnixNano));

    /// <summary>An attribute value as a string: numbers and booleans invariant ("3", "2.5", "true"), arrays as
    /// "[a, b]", key/value lists as "{k=v, ...}", bytes as hex; an empty value as "".</summary>
    public static string Render(AnyValue? value) => value?.ValueCase switch
    {
        AnyValue.ValueOneofCase.StringValue => value.StringValue,
        AnyValue.ValueOneofCase.BoolValue => value.BoolValue ? "true" : "false",
        AnyValue.ValueOneofCase.IntValue => value.IntValue.ToString(CultureInfo.InvariantCulture),
        AnyValue.ValueOneofCase.DoubleValue => value.DoubleValue.ToString("R", CultureInfo.InvariantCulture),
        AnyValue.ValueOneofCase.ArrayValue => "[" + string.Join(", ", value.ArrayValue.Values.Select(Render)) + "]",
        AnyValue.ValueOneofCase.KvlistValue =>
            "{" + string.Join(", ", value.KvlistValue.Values.Select(kv => kv.Key + "=" + Render(kv.Value))) + "}",
        AnyValue.ValueOneofCase.BytesValue => Convert.ToHexStringLower(value.BytesValue.Span),
        _ => "",
    };

    // keys are unique by the spec; should a sender repeat one, its last value wins
    static Dictionary<string, string> Attributes(RepeatedField<KeyValue>? attributes)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        if (attributes is not null)
            foreach (var kv in attributes) result[kv.Key] = Render(kv.Value);
        return result;
    }

    static string ServiceName(IReadOnlyDictionary<string, string> resource) =>
        resource.TryGetValue("service.name", out var name) ? name : "";

    static string Hex(ByteString id) => id.IsEmpty ? "" : Convert.ToHexStringLower(id.Span);

    static DateTimeOffset Time(ulong unixNanos) => DateTimeOffset.UnixEpoch.AddTicks((long)(unixNanos / 100));

    static double Number(NumberDataPoint p) => p.ValueCase switch
    {
        NumberDataPoint.ValueOneofCase.AsDouble => p.AsDouble,
        NumberDataPoint.ValueOneofCase.AsInt => p.AsInt,
        _ => double.NaN,
    };

    static ActivityKind? Kind(Span.Types.SpanKind kind) => kind switch
    {
        Span.Types.SpanKind.Internal => ActivityKind.Internal,
        Span.Types.SpanKind.Server => ActivityKind.Server,
        Span.Types.SpanKind.Client => ActivityKind.Client,
        Span.Types.SpanKind.Producer => ActivityKind.Producer,
        Span.Types.SpanKind.Consumer => ActivityKind.Consumer,
        _ => null,
    };

    static ActivityStatusCode StatusCode(Proto.Status.Types.StatusCode code) => code switch
    {
        Proto.Status.Types.StatusCode.Ok => ActivityStatusCode.Ok,
        Proto.Status.Types.StatusCode.Error => ActivityStatusCode.Error,
        _ => ActivityStatusCode.Unset,
    };
}
