using DistTrain.Protocol.V1;
using Grpc.Core;

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
        await using var coordinator = new TestCoordinator("finish", slots: 1);
        var (client, token) = (coordinator.Client, coordinator.Token);

        var reply = await client.RegisterAsync(coordinator.Slot(0, pid: 1), token, DateTime.UtcNow.AddSeconds(60));
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

        Assert.Equal(0, await coordinator.Server.WaitAsync(TimeSpan.FromSeconds(30)));   // finished; a lost rank fails the job (1)
    }
}
