using DistTrain.Protocol.V1;
using DistTrain.Training.Cluster;
using DistTrain.Training.Config;
using Grpc.Core;
using Grpc.Net.Client;

namespace DistTrain.Coordinator.Tests;

/// <summary>
/// Issue 13: a worker whose registration was abandoned (it died while the job waited for the others) kept its slot,
/// so its restarted self was refused as "registered twice". A real coordinator (Kestrel on loopback), real calls.
/// </summary>
public class RegistrationLeaseTests
{
    [Fact]
    public async Task AnAbandonedRegistrationFreesItsSlotForTheRestartedWorker()
    {
        using var dir = new TempDir();
        int port = TestFiles.FreePort();
        var manifest = ManifestLoader.Load(dir.Write("m.yaml", $"job: lease\nbackend: ring\ncoordinator: {{host: 127.0.0.1, port: {port}}}\ntoken: value:t\nnodes:\n  - {{host: 127.0.0.1, cpus: 2}}\n"));
        var config = TrainConfigLoader.Load(Path.Combine(TestFiles.RepoRoot, "configs", "tiny-muddformer.yaml"), ["train.steps=5"]);
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var server = CoordinatorServer.RunAsync(manifest, config, _ => { }, null, stop.Token);
        using var channel = GrpcChannel.ForAddress($"http://127.0.0.1:{port}");
        var client = new Protocol.V1.Coordinator.CoordinatorClient(channel);
        var token = new Metadata { { ClusterManifest.TokenHeader, "t" } };
        RegisterRequest Slot(int slot, int pid) => new() { Job = "lease", NodeRank = 0, LocalSlot = slot, Host = "127.0.0.1", Pid = pid, RingEndpoint = $"127.0.0.1:{slot + 1}" };
        async Task<int> Waiting() => (await client.GetStatusAsync(new StatusRequest(), token, DateTime.UtcNow.AddSeconds(20))).Registered;

        // slot 0 registers, then its call goes away (the process died): the coordinator frees the slot
        using (var dead = new CancellationTokenSource())
        {
            var call = client.RegisterAsync(Slot(0, 100), token, DateTime.UtcNow.AddMinutes(1), dead.Token).ResponseAsync;
            for (int i = 0; i < 200 && await Waiting() < 1; i++) await Task.Delay(50);
            Assert.Equal(1, await Waiting());
            dead.Cancel();
            await Assert.ThrowsAnyAsync<RpcException>(() => call);
            for (int i = 0; i < 200 && await Waiting() > 0; i++) await Task.Delay(50);
            Assert.Equal(0, await Waiting());
        }

        // the restarted worker takes slot 0 again and the job starts with both
        var restarted = client.RegisterAsync(Slot(0, 101), token, DateTime.UtcNow.AddSeconds(60)).ResponseAsync;
        var other = client.RegisterAsync(Slot(1, 102), token, DateTime.UtcNow.AddSeconds(60)).ResponseAsync;
        var replies = await Task.WhenAll(restarted, other);
        Assert.Equal([0, 1], replies.Select(r => r.Rank));

        stop.Cancel();
        await server.WaitAsync(TimeSpan.FromSeconds(30));
    }
}
