using System.Security.Cryptography;
using System.Text;
using Grpc.Core;
using Grpc.Core.Interceptors;
using DistTrain.Training.Cluster;

namespace DistTrain.Coordinator;

/// <summary>Refuses every call whose "x-disttrain-token" header is not the job's token (PermissionDenied).</summary>
sealed class TokenInterceptor(JobToken token) : Interceptor
{
    const string Header = ClusterManifest.TokenHeader;

    void Check(ServerCallContext context)
    {
        var given = context.RequestHeaders.GetValue(Header);
        if (given is null)
            throw new RpcException(new Status(StatusCode.PermissionDenied, $"no job token: send the '{Header}' header (the manifest's token source)"));
        if (!CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(given), Encoding.UTF8.GetBytes(token.Value)))
            throw new RpcException(new Status(StatusCode.PermissionDenied, "wrong job token: this worker belongs to another job, or its token source differs from the coordinator's"));
    }

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        Check(context);
        return continuation(request, context);
    }

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Check(context);
        return continuation(requestStream, responseStream, context);
    }
}

sealed record JobToken(string Value);
