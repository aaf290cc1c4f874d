using System.Security.Cryptography.X509Certificates;
using DistTrain.Training.Cluster;
using Grpc.Core;
using Grpc.Net.Client;
using Grpc.Net.Client.Configuration;

namespace DistTrain.Worker;

/// <summary>
/// A channel to the coordinator: the job token on every call, and retries declared in the
/// channel's retry policy (a coordinator that starts a little after its workers is normal).
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
        var handler = new SocketsHttpHandler { EnableMultipleHttp2Connections = true, KeepAlivePingDelay = TimeSpan.FromSeconds(10), KeepAlivePingTimeout = TimeSpan.FromSeconds(10) };
        if (manifest.Tls?.CaPath is { } ca)
        {
            var trusted = X509Certificate2.CreateFromPemFile(ca);
            handler.SslOptions.RemoteCertificateValidationCallback = (_, cert, chain, errors) =>
                errors == System.Net.Security.SslPolicyErrors.None || (cert is not null && chain is not null && ChainsTo(cert, chain, trusted));
        }
        var credentials = CallCredentials.FromInterceptor((_, metadata) =>
        {
            metadata.Add(ClusterManifest.TokenHeader, token);
            return Task.CompletedTask;
        });
        var channel = GrpcChannel.ForAddress(address ?? manifest.CoordinatorAddress, new GrpcChannelOptions
        {
            HttpHandler = handler,
            ServiceConfig = new ServiceConfig { MethodConfigs = { retry } },
            Credentials = manifest.Tls is null ? ChannelCredentials.Create(ChannelCredentials.Insecure, credentials) : ChannelCredentials.Create(new SslCredentials(), credentials),
            UnsafeUseInsecureChannelCallCredentials = manifest.Tls is null,
        });
        return new Protocol.V1.Coordinator.CoordinatorClient(channel);
    }

    static bool ChainsTo(X509Certificate cert, X509Chain chain, X509Certificate2 ca)
    {
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(ca);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        return chain.Build(new X509Certificate2(cert));
    }
}
