using DistTrain.Protocol.V1;
using DistTrain.Training.Cluster;
using DistTrain.Training.Config;
using Grpc.Core;
using Grpc.Net.Client;

namespace DistTrain.Coordinator.Tests;

/// <summary>
/// Issue 13: a rank that exited 0 was reported "lost: its heartbeat stream broke" (1 of ~115 launches): its
/// stream reset reached the coordinator before its Finish. A real coordinator, real calls, that order forced.
/// </summary>
public class CleanFinishTests
{
    [Fact]
    public async Task AFinishThatArrivesJustAfterTheStreamBreaksIsAFinishNotALoss()
    {
        using var dir = new TempDir();
        int port = TestFiles.FreePort();
        var manifest = ManifestLoader.Load(dir.Write("m.yaml", $"job: finish\nbackend: ring\ncoordinator: {{host: 127.0.0.1, port: {port}}}\ntoken: value:t\nnodes:\n  - {{host: 127.0.0.1, cpus: 1}}\n"));
        var config = TrainConfigLoader.Load(Path.Combine(TestFiles.RepoRoot, "configs", "tiny-muddformer.yaml"), ["train.steps=5"]);
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var server = CoordinatorServer.RunAsync(manifest, config, _ => { }, null, stop.Token);
        using var channel = GrpcChannel.ForAddress($"http://127.0.0.1:{port}");
        var client = new Protocol.V1.Coordinator.CoordinatorClient(channel);
        var token = new Metadata { { ClusterManifest.TokenHeader, "t" } };

        var reply = await client.RegisterAsync(new RegisterRequest { Job = "finish", NodeRank = 0, LocalSlot = 0, Host = "127.0.0.1", Pid = 1, RingEndpoint = "127.0.0.1:1" },
            token, DateTime.UtcNow.AddSeconds(60));
        using (var streamGone = new CancellationTokenSource())
        {
            var heartbeat = client.Heartbeat(token, cancellationToken: streamGone.Token);
            await heartbeat.RequestStream.WriteAsync(new HeartbeatRequest { Rank = reply.Rank, Step = 5 });
            await Task.Delay(200);
            streamGone.Cancel();   // the stream resets first...
            heartbeat.Dispose();
        }
        await Task.Delay(50);
        await client.FinishAsync(new FinishRequest { Rank = reply.Rank, Step = 5 }, token, DateTime.UtcNow.AddSeconds(20));   // ...then Finish lands

        Assert.Equal(0, await server.WaitAsync(TimeSpan.FromSeconds(30)));
        var status = await client.GetStatusAsync(new StatusRequest(), token, DateTime.UtcNow.AddSeconds(5)).ResponseAsync.ContinueWith(t => t.IsCompletedSuccessfully ? t.Result : null);
        Assert.True(status is null || status.State == JobStatus.Types.State.Finished, status?.Reason);
    }
}
