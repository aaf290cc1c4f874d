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

    public TestCoordinator(string job, int slots, string token = "t")
    {
        Job = job;
        int port = TestFiles.FreePort();
        var manifest = ManifestLoader.Load(_dir.Write("m.yaml", $"job: {job}\nbackend: ring\ncoordinator: {{host: 127.0.0.1, port: {port}}}\ntoken: value:{token}\nnodes:\n  - {{host: 127.0.0.1, cpus: {slots}}}\n"));
        var config = TrainConfigLoader.Load(Path.Combine(TestFiles.RepoRoot, "configs", "tiny-muddformer.yaml"), ["train.steps=5"]);
        Server = CoordinatorServer.RunAsync(manifest, config, _ => { }, null, _stop.Token);
        _channel = GrpcChannel.ForAddress($"http://127.0.0.1:{port}");
        Client = new Protocol.V1.Coordinator.CoordinatorClient(_channel);
        Token = new Metadata { { ClusterManifest.TokenHeader, token } };
    }

    public string Job { get; }

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
