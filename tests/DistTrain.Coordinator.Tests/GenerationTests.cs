using DistTrain.Protocol.V1;
using Grpc.Core;

namespace DistTrain.Coordinator.Tests;

/// <summary>An elastic job's generations, with a real coordinator and real calls in a forced order.</summary>
public class GenerationTests
{
    static readonly string[] Elastic = ["elastic.max_restarts=2", "elastic.replace_wait_s=60"];

    /// <summary>Registers both slots of a 2-slot job; their heartbeat streams (the second one cancellable: a lost worker).</summary>
    static async Task<(AsyncDuplexStreamingCall<HeartbeatRequest, HeartbeatReply> First, AsyncDuplexStreamingCall<HeartbeatRequest, HeartbeatReply> Second, CancellationTokenSource Kill)>
        StartAsync(TestCoordinator coordinator)
    {
        var (client, token) = (coordinator.Client, coordinator.Token);
        var replies = await Task.WhenAll(client.RegisterAsync(coordinator.Slot(0, pid: 1), token, DateTime.UtcNow.AddSeconds(60)).ResponseAsync,
            client.RegisterAsync(coordinator.Slot(1, pid: 2), token, DateTime.UtcNow.AddSeconds(60)).ResponseAsync);
        Assert.Equal([0, 1], replies.Select(r => r.Rank));
        Assert.All(replies, r => Assert.Equal(0, r.Generation));
        var kill = new CancellationTokenSource();
        var first = client.Heartbeat(token);
        var second = client.Heartbeat(token, cancellationToken: kill.Token);
        await first.RequestStream.WriteAsync(new HeartbeatRequest { Rank = 0, Step = 3 });
        await second.RequestStream.WriteAsync(new HeartbeatRequest { Rank = 1, Step = 3 });
        Assert.True(await first.ResponseStream.MoveNext());
        Assert.Equal(HeartbeatReply.Types.Command.Continue, first.ResponseStream.Current.Command);
        return (first, second, kill);
    }

    [Fact]
    public async Task ALostWorkerOpensAGenerationTheSurvivorIsToldToRegisterAgainAndBothDo()
    {
        await using var coordinator = new TestCoordinator("regen", slots: 2, overrides: Elastic);
        var (client, token) = (coordinator.Client, coordinator.Token);
        var (first, second, kill) = await StartAsync(coordinator);
        kill.Cancel();   // rank 1 vanishes
        second.Dispose();
        await Task.Delay(1000);
        await first.RequestStream.WriteAsync(new HeartbeatRequest { Rank = 0, Step = 3, Generation = 0 });
        Assert.True(await first.ResponseStream.MoveNext());
        var restart = first.ResponseStream.Current;
        Assert.Equal((HeartbeatReply.Types.Command.Restart, 1), (restart.Command, restart.Generation));
        Assert.Contains("rank 1 (host 127.0.0.1, pid 2) lost at step 3", restart.Reason);
        Assert.Equal(JobStatus.Types.State.Recovering, (await client.GetStatusAsync(new StatusRequest(), token)).State);

        // the survivor (it trained in generation 0) and the replacement (a new process) register for generation 1
        var replies = await Task.WhenAll(client.RegisterAsync(new RegisterRequest(coordinator.Slot(0, pid: 1)) { Generation = 0 }, token, DateTime.UtcNow.AddSeconds(60)).ResponseAsync,
            client.RegisterAsync(new RegisterRequest(coordinator.Slot(1, pid: 3)) { Generation = -1 }, token, DateTime.UtcNow.AddSeconds(60)).ResponseAsync);
        Assert.All(replies, r => Assert.Equal((1, 2, ""), (r.Generation, r.WorldSize, r.RestoreFrom)));   // no checkpoint committed: from the start
        var status = await client.GetStatusAsync(new StatusRequest(), token);
        Assert.Equal((JobStatus.Types.State.Running, 1, 1, 2), (status.State, status.Generation, status.Recoveries.Count, status.MaxRestarts));
        Assert.Equal((0, 2), (status.Recoveries[0].RestoredStep, status.Recoveries[0].WorldSize));
        first.Dispose();
        coordinator.Stop();
    }

    [Fact]
    public async Task AWorkerWhoseCudaContextIsPoisonedIsRecoveredFromLikeACrash()
    {
        await using var coordinator = new TestCoordinator("poisoned", slots: 2, overrides: Elastic);
        var (client, token) = (coordinator.Client, coordinator.Token);
        var (first, second, _) = await StartAsync(coordinator);
        await client.FinishAsync(new FinishRequest { Rank = 1, Step = 3, Failed = true, Message = "CUDA error: an illegal memory access was encountered",
            Failure = FinishRequest.Types.Failure.Process }, token, DateTime.UtcNow.AddSeconds(20));
        var status = await client.GetStatusAsync(new StatusRequest(), token);
        Assert.Equal((JobStatus.Types.State.Recovering, 1), (status.State, status.Generation));
        Assert.Contains("rank 1 (127.0.0.1) failed at step 3: CUDA error: an illegal memory access was encountered (the process exits: a new one can go on)", status.Recoveries[0].Cause);
        first.Dispose();
        second.Dispose();
        coordinator.Stop();
    }

    [Fact]
    public async Task ARankLostAfterTheOthersFinishedTheLastStepEndsTheJobAsFinished()
    {
        await using var coordinator = new TestCoordinator("late-loss", slots: 2, overrides: Elastic);
        var (client, token) = (coordinator.Client, coordinator.Token);
        var (first, second, kill) = await StartAsync(coordinator);
        await client.FinishAsync(new FinishRequest { Rank = 0, Step = 5 }, token, DateTime.UtcNow.AddSeconds(20));
        kill.Cancel();   // rank 1 vanishes after rank 0 finished: every step was trained
        second.Dispose();
        Assert.Equal(0, await coordinator.Server.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains(coordinator.Log, l => l.Contains("finished"));
        first.Dispose();
    }

    [Fact]
    public async Task AFinishOfThePreviousGenerationThatLandsDuringTheRecoveryEndsTheJobAsFinished()
    {
        await using var coordinator = new TestCoordinator("finish-late", slots: 2, overrides: Elastic);
        var (client, token) = (coordinator.Client, coordinator.Token);
        var (first, second, kill) = await StartAsync(coordinator);
        kill.Cancel();   // rank 1's loss is seen first...
        second.Dispose();
        await Task.Delay(1000);
        Assert.Equal(JobStatus.Types.State.Recovering, (await client.GetStatusAsync(new StatusRequest(), token)).State);
        await client.FinishAsync(new FinishRequest { Rank = 0, Step = 5, Generation = 0 }, token, DateTime.UtcNow.AddSeconds(20));   // ...then rank 0's finish
        Assert.Equal(0, await coordinator.Server.WaitAsync(TimeSpan.FromSeconds(30)));
        first.Dispose();
    }
}
