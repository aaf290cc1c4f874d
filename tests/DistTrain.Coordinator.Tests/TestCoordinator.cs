using DistTrain.Protocol.V1;
using DistTrain.Training.Cluster;
using DistTrain.Training.Config;
using Grpc.Core;
using Grpc.Net.Client;

namespace DistTrain.Coordinator.Tests;

/// <summary>A real coordinator (Kestrel on loopback) for a job of CPU slots on this host, and a client that holds its token.</summary>
sealed class TestCoordinator : IAsyncDisposable
{
    readonly TempDir _dir = new();
    readonly CancellationTokenSource _stop = new(TimeSpan.FromMinutes(2));
    readonly GrpcChannel _channel;

    /// <param name="tls">the manifest's tls section as one YAML line ("tls: {cert: ..., key: ...}"), or null for none</param>
    /// <param name="overrides">more --set assignments for the job's config (elastic.*)</param>
    public TestCoordinator(string job, int slots, string token = "t", string? tls = null, params string[] overrides)
    {
        (Job, _slots, Port) = (job, slots, TestFiles.FreePort());
        var manifest = Manifest(token, tls);
        var config = TrainConfigLoader.Load(Path.Combine(TestFiles.RepoRoot, "configs", "tiny-muddformer.yaml"),
            ["train.steps=5", $"train.run_dir={Path.Combine(_dir.Path, "runs")}", .. overrides]);
        Server = CoordinatorServer.RunAsync(manifest, config, Log.Enqueue, null, _stop.Token);
        // plaintext, as the tests of tokens and registration call it; a TLS coordinator refuses it
        _channel = GrpcChannel.ForAddress($"http://127.0.0.1:{Port}");
        Client = new Protocol.V1.Coordinator.CoordinatorClient(_channel);
        Token = new Metadata { { ClusterManifest.TokenHeader, token } };
    }

    readonly int _slots;

    public string Job { get; }

    public int Port { get; }

    /// <summary>The coordinator's log lines (a refused worker certificate, for example).</summary>
    public System.Collections.Concurrent.ConcurrentQueue<string> Log { get; } = new();

    /// <summary>This job's manifest with its own token and tls section: the coordinator's, or a worker's view of the same job.</summary>
    public ClusterManifest Manifest(string token, string? tls) => ManifestLoader.Load(_dir.Write($"m-{Guid.NewGuid():N}.yaml",
        $"job: {Job}\nbackend: ring\ncoordinator: {{host: 127.0.0.1, port: {Port}}}\ntoken: value:{token}\n{(tls is null ? "" : tls + "\n")}nodes:\n  - {{host: 127.0.0.1, cpus: {_slots}}}\n"));

    /// <summary>Waits until the coordinator accepts TCP connections (its start is asynchronous).</summary>
    public async Task ListeningAsync()
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            using var probe = new System.Net.Sockets.TcpClient();
            try { await probe.ConnectAsync(System.Net.IPAddress.Loopback, Port); return; }
            catch (System.Net.Sockets.SocketException) when (clock.Elapsed < TimeSpan.FromSeconds(30) && !Server.IsCompleted) { await Task.Delay(50); }
        }
    }

    /// <summary>The coordinator's exit code once it stops (0: the job finished).</summary>
    public Task<int> Server { get; }

    public Protocol.V1.Coordinator.CoordinatorClient Client { get; }

    /// <summary>The job token header: every call but the tests of refusal carries it.</summary>
    public Metadata Token { get; }

    /// <summary>A worker's registration for node 0's <paramref name="slot"/>.</summary>
    public RegisterRequest Slot(int slot, int pid = 0) =>
        new() { Job = Job, NodeRank = 0, LocalSlot = slot, Host = "127.0.0.1", Pid = pid, RingEndpoint = $"127.0.0.1:{slot + 1}" };

    /// <summary>Stops the coordinator as an interrupted job (it exits non-zero unless the job had finished).</summary>
    public void Stop() => _stop.Cancel();

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        await Server.WaitAsync(TimeSpan.FromSeconds(30));
        _channel.Dispose();
        _dir.Dispose();
    }
}
