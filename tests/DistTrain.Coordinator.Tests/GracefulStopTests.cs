using DistTrain.Protocol.V1;
using Grpc.Core;

namespace DistTrain.Coordinator.Tests;

/// <summary>A graceful stop through a real coordinator: every rank acknowledges, all stop after the same step, the exit code is the signal's.</summary>
public class GracefulStopTests
{
    [Fact]
    public async Task RanksAcknowledgeTheirStepsAndAllStopAfterTheLargestPlusOne()
    {
        await using var coordinator = new TestCoordinator("stop", slots: 2);
        var (client, token) = (coordinator.Client, coordinator.Token);
        var registered = await Task.WhenAll(Enumerable.Range(0, 2).Select(slot =>
            client.RegisterAsync(coordinator.Slot(slot, pid: slot + 1), token, DateTime.UtcNow.AddSeconds(60)).ResponseAsync));
        var streams = registered.Select(r => client.Heartbeat(token)).ToArray();

        async Task<HeartbeatReply> Beat(int rank, int step, int acknowledged = -1)
        {
            var stream = streams[rank];
            await stream.RequestStream.WriteAsync(new HeartbeatRequest
            {
                Rank = rank, Step = step, StopAcknowledged = acknowledged >= 0, StopFinishedSteps = Math.Max(0, acknowledged),
            });
            Assert.True(await stream.ResponseStream.MoveNext(CancellationToken.None));
            return stream.ResponseStream.Current;
        }

        Assert.Equal(HeartbeatReply.Types.Command.Continue, (await Beat(0, 3)).Command);
        var asked = await client.RequestStopAsync(new StopJobRequest { Rank = 1, ExitCode = 143, From = "rank 1's signal" }, token);
        Assert.Equal(JobStatus.Types.State.Stopping, asked.State);
        var request = await Beat(0, 4);
        Assert.Equal((HeartbeatReply.Types.Command.StopRequested, 143), (request.Command, request.ExitCode));
        // rank 0 had finished 4 steps, rank 1 five: nobody is past 6
        Assert.Equal(HeartbeatReply.Types.Command.StopRequested, (await Beat(0, 4, acknowledged: 4)).Command);
        var stopAt = await Beat(1, 5, acknowledged: 5);
        Assert.Equal((HeartbeatReply.Types.Command.StopAt, 6, 143), (stopAt.Command, stopAt.StopStep, stopAt.ExitCode));
        var again = await Beat(0, 5);
        Assert.Equal((HeartbeatReply.Types.Command.StopAt, 6), (again.Command, again.StopStep));

        // the save of step 6 commits while the job is stopping
        var votes = await Task.WhenAll(Enumerable.Range(0, 2).Select(rank =>
            client.CheckpointVoteAsync(new CheckpointVoteRequest { Rank = rank, Step = 6 }, token).ResponseAsync));
        Assert.All(votes, v => Assert.True(v.Commit, v.Reason));
        await client.CheckpointDoneAsync(new CheckpointDoneRequest { Step = 6, Path = "/ckpt/step-00000006" }, token);
        foreach (var rank in new[] { 0, 1 })
        {
            await client.FinishAsync(new FinishRequest { Rank = rank, Step = 6, Stopped = true }, token);
            await streams[rank].RequestStream.CompleteAsync();
        }
        Assert.Equal(143, await coordinator.Server.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains(coordinator.Log, l => l == "job 'stop' stopped at step 6; checkpoint /ckpt/step-00000006; resume with: the same command, every worker given --resume /ckpt/step-00000006");
        foreach (var s in streams) s.Dispose();
    }

    [Fact]
    public async Task AStopBeforeEveryWorkerRegisteredEndsTheJobAtOnceWithTheSignalsCode()
    {
        await using var coordinator = new TestCoordinator("early", slots: 2);
        await coordinator.ListeningAsync();
        var asked = await coordinator.Client.RequestStopAsync(new StopJobRequest { Rank = -1, ExitCode = 130, From = "launch on node 0" }, coordinator.Token);
        Assert.Equal(JobStatus.Types.State.Waiting, asked.State);
        Assert.Equal(130, await coordinator.Server.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains(coordinator.Log, l => l.Contains("stopped by launch on node 0 before every worker registered"));
    }
}
