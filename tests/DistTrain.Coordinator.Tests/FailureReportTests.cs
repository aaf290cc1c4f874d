using DistTrain.Protocol.V1;
using Grpc.Core;

namespace DistTrain.Coordinator.Tests;

/// <summary>
/// Which failure the coordinator names, over real gRPC: a rank's own error at once, even when a peer's broken
/// collective reached it first; a rank that vanished without a word, before a peer's broken collective; never
/// "lost" for a rank that reported its failure and then exited.
/// </summary>
public class FailureReportTests
{
    static async Task<(TestCoordinator, AsyncDuplexStreamingCall<HeartbeatRequest, HeartbeatReply>[])> Running(int pid0)
    {
        var coordinator = new TestCoordinator("failures", slots: 2);
        var (client, token) = (coordinator.Client, coordinator.Token);
        await Task.WhenAll(new[] { pid0, 2 }.Select((pid, slot) => client.RegisterAsync(coordinator.Slot(slot, pid), token, DateTime.UtcNow.AddSeconds(30)).ResponseAsync));
        var streams = new[] { 0, 1 }.Select(_ => client.Heartbeat(token)).ToArray();
        for (int rank = 0; rank < 2; rank++)
            await streams[rank].RequestStream.WriteAsync(new HeartbeatRequest { Rank = rank, Step = 3 });
        return (coordinator, streams);
    }

    /// <summary>The reason of the STOP a rank's heartbeat stream gets (CONTINUE answers skipped).</summary>
    static async Task<string> StopOf(AsyncDuplexStreamingCall<HeartbeatRequest, HeartbeatReply> stream)
    {
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        await foreach (var reply in stream.ResponseStream.ReadAllAsync(limit.Token))
            if (reply.Command == HeartbeatReply.Types.Command.Stop) return reply.Reason;
        return "(the stream ended without STOP)";
    }

    static FinishRequest Failed(int rank, string message, FinishRequest.Types.Failure failure) =>
        new() { Rank = rank, Step = 3, Failed = true, Message = message, Failure = failure };

    [Fact]
    public async Task ARanksOwnErrorIsNamedEvenWhenAPeersBrokenCollectiveArrivedFirst()
    {
        var (coordinator, streams) = await Running(pid0: 1);
        await using var _ = coordinator;
        var (client, token) = (coordinator.Client, coordinator.Token);
        await client.FinishAsync(Failed(1, "ring: rank 0 closed the connection", FinishRequest.Types.Failure.Collective), token);
        await Task.Delay(100);
        await client.FinishAsync(Failed(0, "data/train.parquet: row group 3, row 7: token id 700 is outside the vocabulary [0, 600)", FinishRequest.Types.Failure.Own), token);

        const string cause = "rank 0 (127.0.0.1) failed at step 3: data/train.parquet: row group 3, row 7: token id 700 is outside the vocabulary [0, 600)";
        Assert.Equal([cause, cause], await Task.WhenAll(streams.Select(StopOf)));
        Assert.Equal(cause, (await client.GetStatusAsync(new StatusRequest(), token)).Reason);
        foreach (var s in streams) s.Dispose();
        Assert.Equal(1, await coordinator.Server.WaitAsync(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task ARankThatReportedItsFailureAndExitedIsNotCalledLost()
    {
        var (coordinator, streams) = await Running(pid0: 1);
        await using var _ = coordinator;
        var (client, token) = (coordinator.Client, coordinator.Token);
        await client.FinishAsync(Failed(1, "ring: rank 0 closed the connection", FinishRequest.Types.Failure.Collective), token);
        streams[1].Dispose();   // it exits at once: its stream breaks within the 750 ms its report waits for a cause

        Assert.Equal("rank 1 (127.0.0.1) failed at step 3: ring: rank 0 closed the connection", await StopOf(streams[0]));
        streams[0].Dispose();
        Assert.Equal(1, await coordinator.Server.WaitAsync(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task ARankThatVanishedIsNamedBeforeAPeersBrokenCollective()
    {
        var (coordinator, streams) = await Running(pid0: 4242);
        await using var _ = coordinator;
        var (client, token) = (coordinator.Client, coordinator.Token);
        streams[0].Dispose();   // rank 0 is killed: its stream breaks, it says nothing...
        await client.FinishAsync(Failed(1, "ring: rank 0 closed the connection", FinishRequest.Types.Failure.Collective), token);   // ...its peer notices

        Assert.StartsWith("rank 0 (host 127.0.0.1, pid 4242) lost at step 3: its heartbeat stream", await StopOf(streams[1]));
        streams[1].Dispose();
        Assert.Equal(1, await coordinator.Server.WaitAsync(TimeSpan.FromSeconds(30)));
    }
}
