using DistTrain.Protocol.V1;
using DistTrain.Training.Cluster;
using DistTrain.Worker;
using Grpc.Core;
using Grpc.Net.Client;

namespace DistTrain.Coordinator.Tests;

/// <summary>
/// A real TLS coordinator (Kestrel on loopback) and clients that check it the way a worker does (<see cref="ClientTls"/>),
/// with a CA and certificates made for each test.
/// </summary>
public class TlsTests : IDisposable
{
    const string Token = "tls-token";
    /// <summary>How a call fails when the coordinator ends the connection in the handshake (either, by timing).</summary>
    static readonly StatusCode[] Broken = [StatusCode.Unavailable, StatusCode.Internal];
    readonly TempDir _pki = new();
    readonly TestPki _ca, _otherCa;

    public TlsTests()
    {
        _ca = new TestPki(_pki.Path, "job-ca");
        _otherCa = new TestPki(_pki.Path, "other-ca");
    }

    public void Dispose() => _pki.Dispose();

    static string Tls((string Cert, string Key) server, string? ca = null, (string Cert, string Key)? client = null) =>
        $"tls: {{cert: {server.Cert}, key: {server.Key}" + (ca is null ? "" : $", ca: {ca}") +
        (client is { } c ? $", client_cert: {c.Cert}, client_key: {c.Key}" : "") + "}";

    /// <summary>GetStatus over TLS as a worker with <paramref name="worker"/>'s tls section would call it (one attempt, no retries).</summary>
    static async Task<JobStatus> StatusAsync(TestCoordinator coordinator, ClusterManifest worker, string token = Token)
    {
        var address = new Uri($"https://127.0.0.1:{coordinator.Port}");
        using var handler = new SocketsHttpHandler();
        ClientTls.Configure(handler, worker, address);
        using var channel = GrpcChannel.ForAddress(address, new GrpcChannelOptions { HttpHandler = handler });
        var client = new Protocol.V1.Coordinator.CoordinatorClient(channel);
        return await client.GetStatusAsync(new StatusRequest(), new Metadata { { ClusterManifest.TokenHeader, token } }, DateTime.UtcNow.AddSeconds(20));
    }

    [Fact(Timeout = 120_000)]
    public async Task AWorkerThatTrustsTheCaReachesACoordinatorNamedForItsAddressAndStillNeedsTheToken()
    {
        var server = _ca.Server("coordinator", "127.0.0.1", "localhost");
        await using var coordinator = new TestCoordinator("tls-ok", slots: 2, Token, Tls(server, _ca.CaPath));
        await coordinator.ListeningAsync();
        var worker = coordinator.Manifest(Token, Tls(server, _ca.CaPath));

        var status = await StatusAsync(coordinator, worker);
        Assert.Equal("tls-ok", status.Job);
        Assert.Equal(2, status.WorldSize);
        var noToken = await Assert.ThrowsAsync<RpcException>(() => StatusAsync(coordinator, worker, token: "wrong"));
        Assert.Equal(StatusCode.PermissionDenied, noToken.StatusCode);
    }

    [Fact(Timeout = 120_000)]
    public async Task ACertificateForAnotherNameIsRefusedNamingTheAddressAndTheCertificatesNames()
    {
        var evil = _ca.Server("evil", "evil.example");   // signed by the job's CA, but not for 127.0.0.1
        await using var coordinator = new TestCoordinator("tls-name", slots: 1, Token, Tls(evil, _ca.CaPath));
        await coordinator.ListeningAsync();

        var e = await Assert.ThrowsAsync<RpcException>(() => StatusAsync(coordinator, coordinator.Manifest(Token, Tls(evil, _ca.CaPath))));
        var refused = ClientTls.Refusal(e);
        Assert.NotNull(refused);
        Assert.Contains("the certificate is for DNS:evil.example, not 127.0.0.1", refused.Message);
        Assert.Contains("IP:127.0.0.1", refused.Message);   // what to put in the certificate
    }

    [Fact(Timeout = 120_000)]
    public async Task ACertificateFromAnotherCaIsRefused()
    {
        var stranger = _otherCa.Server("coordinator", "127.0.0.1");
        await using var coordinator = new TestCoordinator("tls-ca", slots: 1, Token, Tls(stranger, _otherCa.CaPath));
        await coordinator.ListeningAsync();

        var e = await Assert.ThrowsAsync<RpcException>(() => StatusAsync(coordinator, coordinator.Manifest(Token, Tls(stranger, _ca.CaPath))));
        var refused = ClientTls.Refusal(e);
        Assert.NotNull(refused);
        Assert.Contains("not signed by the CA in tls.ca", refused.Message);
        Assert.Contains(_ca.CaPath, refused.Message);
        Assert.Contains("CN=other-ca", refused.Message);   // the issuer it has

        // without tls.ca a worker trusts the system's roots, which do not hold a job's own CA
        var systemOnly = await Assert.ThrowsAsync<RpcException>(() => StatusAsync(coordinator, coordinator.Manifest(Token, $"tls: {{cert: {stranger.Cert}, key: {stranger.Key}}}")));
        Assert.Contains("it was not signed by the system's trusted roots", ClientTls.Refusal(systemOnly)?.Message);
    }

    [Fact(Timeout = 120_000)]
    public async Task APlaintextClientIsRefusedByATlsCoordinator()
    {
        var server = _ca.Server("coordinator", "127.0.0.1");
        await using var coordinator = new TestCoordinator("tls-plain", slots: 1, Token, Tls(server, _ca.CaPath));
        await coordinator.ListeningAsync();

        // the fixture's client speaks plaintext HTTP/2 and carries the right token
        var e = await Assert.ThrowsAsync<RpcException>(() => coordinator.Client.GetStatusAsync(new StatusRequest(), coordinator.Token, DateTime.UtcNow.AddSeconds(20)).ResponseAsync);
        Assert.Contains(e.StatusCode, Broken);
        Assert.Null(ClientTls.Refusal(e));
        // the same coordinator serves a TLS client: the refusal was the plaintext
        Assert.Equal("tls-plain", (await StatusAsync(coordinator, coordinator.Manifest(Token, Tls(server, _ca.CaPath)))).Job);
    }

    [Fact(Timeout = 120_000)]
    public async Task UnderMutualTlsOnlyAWorkerWithACertificateFromTheCaIsServed()
    {
        var server = _ca.Server("coordinator", "127.0.0.1");
        var good = _ca.Client("worker");
        var foreign = _otherCa.Client("worker");
        await using var coordinator = new TestCoordinator("tls-mutual", slots: 1, Token, Tls(server, _ca.CaPath, good));
        await coordinator.ListeningAsync();

        var without = await Assert.ThrowsAsync<RpcException>(() => StatusAsync(coordinator, coordinator.Manifest(Token, Tls(server, _ca.CaPath))));
        Assert.Contains(without.StatusCode, Broken);
        Assert.Null(ClientTls.Refusal(without));   // the coordinator refused it, not the worker

        var wrongCa = await Assert.ThrowsAsync<RpcException>(() => StatusAsync(coordinator, coordinator.Manifest(Token, Tls(server, _ca.CaPath, foreign))));
        Assert.Contains(wrongCa.StatusCode, Broken);
        Assert.Contains(coordinator.Log, line => line.Contains("refused a worker's TLS connection") && line.Contains("issuer: CN=other-ca") && line.Contains("not signed by the CA in tls.ca"));

        var status = await StatusAsync(coordinator, coordinator.Manifest(Token, Tls(server, _ca.CaPath, good)));
        Assert.Equal("tls-mutual", status.Job);
    }
}
