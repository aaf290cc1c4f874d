using DistTrain.Training.Cluster;
using Grpc.Core;
using Grpc.Net.Client;
using Grpc.Net.Client.Configuration;

namespace DistTrain.Worker;

/// <summary>
/// A channel to the coordinator: the job token on every call, TLS as the manifest says (<see cref="ClientTls"/>),
/// and retries declared in the channel's retry policy (a coordinator that starts a little after its workers is normal).
/// </summary>
static class CoordinatorClient
{
    public static Protocol.V1.Coordinator.CoordinatorClient Create(ClusterManifest manifest, string token, string? address = null)
    {
        var retry = new MethodConfig
        {
            Names = { MethodName.Default },
            RetryPolicy = new RetryPolicy
            {
                MaxAttempts = 5,
                InitialBackoff = TimeSpan.FromMilliseconds(500),
                MaxBackoff = TimeSpan.FromSeconds(5),
                BackoffMultiplier = 2,
                RetryableStatusCodes = { StatusCode.Unavailable },
            },
        };
        // The heartbeat stream is never retried by the channel: HeartbeatLink opens a new stream itself when one breaks, and a
        // retried stream that connected late was a second live stream of the rank, whose end the coordinator took for its loss.
        var heartbeat = new MethodConfig { Names = { new MethodName { Service = "disttrain.v1.Coordinator", Method = "Heartbeat" } } };
        var handler = new SocketsHttpHandler { EnableMultipleHttp2Connections = true, KeepAlivePingDelay = TimeSpan.FromSeconds(10), KeepAlivePingTimeout = TimeSpan.FromSeconds(10) };
        var target = new Uri(address ?? manifest.CoordinatorAddress);
        if (manifest.Tls is not null) ClientTls.Configure(handler, manifest, target);
        var credentials = CallCredentials.FromInterceptor((_, metadata) =>
        {
            metadata.Add(ClusterManifest.TokenHeader, token);
            return Task.CompletedTask;
        });
        var channel = GrpcChannel.ForAddress(target, new GrpcChannelOptions
        {
            HttpHandler = handler,
            ServiceConfig = new ServiceConfig { MethodConfigs = { retry, heartbeat } },
            Credentials = manifest.Tls is null ? ChannelCredentials.Create(ChannelCredentials.Insecure, credentials) : ChannelCredentials.Create(ChannelCredentials.SecureSsl, credentials),
            UnsafeUseInsecureChannelCallCredentials = manifest.Tls is null,
        });
        return new Protocol.V1.Coordinator.CoordinatorClient(channel);
    }
}
