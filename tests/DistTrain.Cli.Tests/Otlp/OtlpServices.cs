using System.IO.Compression;
using DistTrain.Cli.Tests.Otlp.Proto;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.AspNetCore.Http;

namespace DistTrain.Cli.Tests.Otlp;

// OTLP/gRPC: one unary Export per signal; a gzip-compressed message (grpc-encoding: gzip) is
// decompressed by Grpc.AspNetCore before it gets here.

sealed class TraceReceiver(OtlpReceiver receiver) : TraceService.TraceServiceBase
{
    public override Task<ExportTraceServiceResponse> Export(ExportTraceServiceRequest request, ServerCallContext context)
    {
        receiver.Receive(request, OtlpTransport.Grpc);
        return Task.FromResult(new ExportTraceServiceResponse());
    }
}

sealed class MetricsReceiver(OtlpReceiver receiver) : MetricsService.MetricsServiceBase
{
    public override Task<ExportMetricsServiceResponse> Export(ExportMetricsServiceRequest request, ServerCallContext context)
    {
        receiver.Receive(request, OtlpTransport.Grpc);
        return Task.FromResult(new ExportMetricsServiceResponse());
    }
}

sealed class LogsReceiver(OtlpReceiver receiver) : LogsService.LogsServiceBase
{
    public override Task<ExportLogsServiceResponse> Export(ExportLogsServiceRequest request, ServerCallContext context)
    {
        receiver.Receive(request, OtlpTransport.Grpc);
        return Task.FromResult(new ExportLogsServiceResponse());
    }
}

/// <summary>OTLP/HTTP with binary protobuf: POST the Export*ServiceRequest, answer 200 with the (empty)
/// Export*ServiceResponse. JSON bodies are refused with 415, bodies that do not parse with 400.</summary>
static class OtlpHttp
{
    const string Protobuf = "application/x-protobuf";

    public static RequestDelegate Route<TRequest, TResponse>(
        OtlpReceiver receiver, MessageParser<TRequest> parser, Action<TRequest, OtlpTransport> receive, TResponse response)
        where TRequest : IMessage<TRequest>
        where TResponse : IMessage<TResponse> =>
        async context =>
        {
            var request = context.Request;
            var contentType = request.ContentType ?? "";
            if (!contentType.StartsWith(Protobuf, StringComparison.OrdinalIgnoreCase))
            {
                await Refuse(context, receiver, StatusCodes.Status415UnsupportedMediaType,
                    $"Content-Type '{contentType}': this receiver takes OTLP/HTTP with {Protobuf} bodies only");
                return;
            }

            TRequest message;
            try
            {
                // the .NET SDK gzips the body when OTEL_EXPORTER_OTLP_COMPRESSION=gzip
                var gzip = string.Equals(request.Headers.ContentEncoding, "gzip", StringComparison.OrdinalIgnoreCase);
                using var buffer = new MemoryStream();
                if (gzip)
                {
                    await using var unzip = new GZipStream(request.Body, CompressionMode.Decompress, leaveOpen: true);
                    await unzip.CopyToAsync(buffer, context.RequestAborted);
                }
                else await request.Body.CopyToAsync(buffer, context.RequestAborted);
                message = parser.ParseFrom(buffer.GetBuffer().AsSpan(0, (int)buffer.Length));
            }
            catch (Exception e) when (e is InvalidProtocolBufferException or InvalidDataException)
            {
                await Refuse(context, receiver, StatusCodes.Status400BadRequest,
                    $"the body is not a {typeof(TRequest).Name} ({e.Message})");
                return;
            }

            receive(message, OtlpTransport.HttpProtobuf);
            context.Response.ContentType = Protobuf;
            await context.Response.Body.WriteAsync(response.ToByteArray(), context.RequestAborted);
        };

    static async Task Refuse(HttpContext context, OtlpReceiver receiver, int status, string reason)
    {
        receiver.Reject($"{context.Request.Method} {context.Request.Path}: {status} {reason}");
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/plain";
        await context.Response.WriteAsync(reason, context.RequestAborted);
    }
}
