using DistTrain.Protocol.V1;
using Grpc.Core;

namespace DistTrain.Coordinator.Tests;

/// <summary>The checkpoint two-phase commit as the coordinator runs it, over real gRPC.</summary>
public class CheckpointCommitTests
{
    sealed class Job : IAsyncDisposable
    {
        readonly TestCoordinator _coordinator = new("ckpt", slots: 2);
        public Task<int> Server => _coordinator.Server;
        public Protocol.V1.Coordinator.CoordinatorClient Client => _coordinator.Client;
        public Metadata Token => _coordinator.Token;

        public async Task RegisterBoth()
        {
            var ranks = await Task.WhenAll(Enumerable.Range(0, 2).Select(slot => Client.RegisterAsync(_coordinator.Slot(slot), Token, DateTime.UtcNow.AddSeconds(30)).ResponseAsync));
            Assert.Equal([0, 1], ranks.Select(r => r.Rank));
        }

        public Task<CheckpointVoteReply> Vote(int rank, int step, string error = "") => Client.CheckpointVoteAsync(new CheckpointVoteRequest
        {
            Rank = rank, Step = step, Error = error,
            Files = { new CheckpointFile { Name = $"shard-{rank:D5}-of-00002.safetensors", Sha256 = new string((char)('a' + rank), 64), Bytes = 100 + rank } },
        }, Token, DateTime.UtcNow.AddSeconds(30)).ResponseAsync;

        public ValueTask DisposeAsync() => _coordinator.DisposeAsync();
    }

    [Fact]
    public async Task TheVoteAnswersOnlyWhenEveryRankVotedAndThenCarriesEveryRanksFiles()
    {
        await using var job = new Job();
        await job.RegisterBoth();
        var first = job.Vote(0, 10);
        await Task.Delay(300);
        Assert.False(first.IsCompleted);                          // rank 1 has not voted: rank 0 waits
        var second = job.Vote(1, 10);
        var replies = await Task.WhenAll(first, second);
        Assert.All(replies, r => Assert.True(r.Commit));
        Assert.Equal(["shard-00000-of-00002.safetensors", "shard-00001-of-00002.safetensors"], replies[0].Files.Select(f => f.Name));
        Assert.Equal([100L, 101L], replies[1].Files.Select(f => f.Bytes));

        await job.Client.CheckpointDoneAsync(new CheckpointDoneRequest { Step = 10, Path = "/ckpt/step-00000010" }, job.Token);
        var status = await job.Client.GetStatusAsync(new StatusRequest(), job.Token);
        Assert.Equal(10, status.CheckpointStep);
        Assert.Equal("/ckpt/step-00000010", status.CheckpointPath);

        _ = job.Vote(0, 20);   // waits for rank 1 until the job stops
        await Task.Delay(300);
        var twice = await Assert.ThrowsAsync<RpcException>(() => job.Vote(0, 20));
        Assert.Equal(StatusCode.AlreadyExists, twice.StatusCode);
    }

    [Fact]
    public async Task OneRanksFailedWriteAbortsTheSaveForEveryRankNamingIt()
    {
        await using var job = new Job();
        await job.RegisterBoth();
        var replies = await Task.WhenAll(job.Vote(0, 10), job.Vote(1, 10, "/ckpt/.tmp-step-00000010-x: No space left on device"));
        Assert.All(replies, r => Assert.False(r.Commit));
        Assert.All(replies, r => Assert.Equal("rank 1 (127.0.0.1): /ckpt/.tmp-step-00000010-x: No space left on device", r.Reason));
        Assert.All(replies, r => Assert.Empty(r.Files));

        await job.Client.CheckpointDoneAsync(new CheckpointDoneRequest { Step = 10, Error = replies[0].Reason }, job.Token);
        var status = await job.Client.GetStatusAsync(new StatusRequest(), job.Token);
        Assert.Equal(0, status.CheckpointStep);
        Assert.Contains("step 10: rank 1", status.CheckpointError);
    }

    [Fact]
    public async Task AVoteWaitingWhenTheJobFailsIsAbortedNotLeftHanging()
    {
        await using var job = new Job();
        await job.RegisterBoth();
        var waiting = job.Vote(0, 10);
        await job.Client.FinishAsync(new FinishRequest { Rank = 1, Step = 9, Failed = true, Message = "boom" }, job.Token);
        var aborted = await Assert.ThrowsAsync<RpcException>(() => waiting);
        Assert.Equal(StatusCode.Aborted, aborted.StatusCode);
        Assert.Contains("rank 1 (127.0.0.1) failed at step 9: boom", aborted.Status.Detail);
    }
}
