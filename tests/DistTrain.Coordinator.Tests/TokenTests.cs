using DistTrain.Protocol.V1;
using DistTrain.Training.Cluster;
using Grpc.Core;

namespace DistTrain.Coordinator.Tests;

/// <summary>A real coordinator (Kestrel on loopback) called the way a stranger would.</summary>
public class TokenTests
{
    [Fact]
    public async Task CallsWithoutTheRightTokenAreRefusedAndTheRightTokenIsServed()
    {
        await using var coordinator = new TestCoordinator("tokens", slots: 2, token: "right");
        var client = coordinator.Client;
        async Task<RpcException> Refused(Metadata? headers) =>
            await Assert.ThrowsAsync<RpcException>(() => client.GetStatusAsync(new StatusRequest(), headers, DateTime.UtcNow.AddSeconds(20)).ResponseAsync);

        var missing = await Refused(null);
        Assert.Equal(StatusCode.PermissionDenied, missing.StatusCode);
        Assert.Contains("no job token", missing.Status.Detail);
        var wrong = await Refused(new Metadata { { ClusterManifest.TokenHeader, "wrong" } });
        Assert.Equal(StatusCode.PermissionDenied, wrong.StatusCode);
        Assert.Contains("wrong job token", wrong.Status.Detail);

        var right = coordinator.Token;
        var status = await client.GetStatusAsync(new StatusRequest(), right, DateTime.UtcNow.AddSeconds(20));
        Assert.Equal(JobStatus.Types.State.Waiting, status.State);
        Assert.Equal(2, status.WorldSize);

        var otherJob = await Assert.ThrowsAsync<RpcException>(() => client.RegisterAsync(new RegisterRequest { Job = "another", NodeRank = 0, LocalSlot = 0 }, right, DateTime.UtcNow.AddSeconds(20)).ResponseAsync);
        Assert.Equal(StatusCode.FailedPrecondition, otherJob.StatusCode);
        var badSlot = await Assert.ThrowsAsync<RpcException>(() => client.RegisterAsync(new RegisterRequest { Job = "tokens", NodeRank = 0, LocalSlot = 5 }, right, DateTime.UtcNow.AddSeconds(20)).ResponseAsync);
        Assert.Contains("local_slot: 5 is not one of node 0", badSlot.Status.Detail);

        // the world (2 slots) registers; a third worker cannot join the started job
        var first = client.RegisterAsync(new RegisterRequest { Job = "tokens", NodeRank = 0, LocalSlot = 0, Host = "127.0.0.1", RingEndpoint = "127.0.0.1:1" }, right, DateTime.UtcNow.AddSeconds(30)).ResponseAsync;
        var second = client.RegisterAsync(new RegisterRequest { Job = "tokens", NodeRank = 0, LocalSlot = 1, Host = "127.0.0.1", RingEndpoint = "127.0.0.1:2" }, right, DateTime.UtcNow.AddSeconds(30)).ResponseAsync;
        var replies = await Task.WhenAll(first, second);
        Assert.Equal([0, 1], replies.Select(r => r.Rank));
        Assert.Equal(["127.0.0.1:1", "127.0.0.1:2"], replies[1].RingEndpoints);
        Assert.Equal(replies[0].WindowsPerShard, replies[1].Shards[0].Windows);
        Assert.Equal(replies[0].Shards[0].Windows, replies[1].Shards[0].FirstWindow);   // contiguous, disjoint shards
        var late = await Assert.ThrowsAsync<RpcException>(() => client.RegisterAsync(new RegisterRequest { Job = "tokens", NodeRank = 0, LocalSlot = 0 }, right, DateTime.UtcNow.AddSeconds(20)).ResponseAsync);
        Assert.Equal(StatusCode.FailedPrecondition, late.StatusCode);
        Assert.Contains("already running", late.Status.Detail);

        coordinator.Stop();
        Assert.Equal(1, await coordinator.Server.WaitAsync(TimeSpan.FromSeconds(30)));   // interrupted before finishing: a failed job
    }
}
