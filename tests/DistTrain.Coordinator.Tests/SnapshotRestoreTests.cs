using DistTrain.Protocol.V1;
using Grpc.Core;

namespace DistTrain.Coordinator.Tests;

/// <summary>
/// In-memory snapshots through a real coordinator: the ranks' votes commit one, and a new generation restores it from the
/// workers that still hold each slice, or from disk when a rank and its right neighbour (the buddy holding its copy) are both gone.
/// </summary>
public class SnapshotRestoreTests
{
    static readonly string[] Elastic = ["elastic.max_restarts=2", "elastic.replace_wait_s=60", "elastic.snapshot_interval=2"];

    static Task<RegisterReply[]> RegisterAll(TestCoordinator coordinator, params RegisterRequest[] requests) =>
        Task.WhenAll(requests.Select(r => coordinator.Client.RegisterAsync(r, coordinator.Token, DateTime.UtcNow.AddSeconds(60)).ResponseAsync));

    static Task<SnapshotVoteReply[]> VoteAll(TestCoordinator coordinator, int step, int world) =>
        Task.WhenAll(Enumerable.Range(0, world).Select(rank => coordinator.Client.SnapshotVoteAsync(new SnapshotVoteRequest
        {
            Rank = rank, Step = step, Generation = 0, AdamSteps = step, FirstNonFinite = -1,
            CursorsJson = $"{{\"{2 * rank}\":\"cursor {2 * rank} at {step}\",\"{2 * rank + 1}\":\"cursor {2 * rank + 1} at {step}\"}}",
        }, coordinator.Token, DateTime.UtcNow.AddSeconds(30)).ResponseAsync));

    static HeldSnapshot Held(int step, int world, params int[] slices)
    {
        var held = new HeldSnapshot { Generation = 0, Step = step, WorldSize = world };
        held.Slices.AddRange(slices);
        return held;
    }

    /// <summary>Kills rank <paramref name="rank"/>'s heartbeat stream while the others keep theirs: the coordinator opens generation 1.</summary>
    static async Task<List<AsyncDuplexStreamingCall<HeartbeatRequest, HeartbeatReply>>> LoseAsync(TestCoordinator coordinator, int world, params int[] lost)
    {
        var streams = new List<AsyncDuplexStreamingCall<HeartbeatRequest, HeartbeatReply>>();
        var kills = new List<CancellationTokenSource>();
        for (int rank = 0; rank < world; rank++)
        {
            var kill = new CancellationTokenSource();
            var stream = coordinator.Client.Heartbeat(coordinator.Token, cancellationToken: kill.Token);
            await stream.RequestStream.WriteAsync(new HeartbeatRequest { Rank = rank, Step = 5 });
            Assert.True(await stream.ResponseStream.MoveNext());
            (lost.Contains(rank) ? kills : []).Add(kill);
            streams.Add(stream);
        }
        foreach (var kill in kills) kill.Cancel();
        for (int i = 0; i < 100 && (await coordinator.Client.GetStatusAsync(new StatusRequest(), coordinator.Token)).State != JobStatus.Types.State.Recovering; i++)
            await Task.Delay(100);
        return streams;
    }

    [Fact]
    public async Task ALostRanksSliceComesFromItsNeighboursCopyAndTheCursorsFromTheVotes()
    {
        await using var coordinator = new TestCoordinator("snapshot", slots: 2, overrides: Elastic);
        await RegisterAll(coordinator, coordinator.Slot(0, pid: 1), coordinator.Slot(1, pid: 2));
        Assert.All(await VoteAll(coordinator, 2, 2), r => Assert.True(r.Commit));
        Assert.All(await VoteAll(coordinator, 4, 2), r => Assert.True(r.Commit));
        Assert.Equal(4, (await coordinator.Client.GetStatusAsync(new StatusRequest(), coordinator.Token)).SnapshotStep);

        var streams = await LoseAsync(coordinator, 2, lost: 1);
        // the survivor holds its slice and rank 1's (its left neighbour, in a ring of 2); the replacement is a new process
        var replies = await RegisterAll(coordinator, new RegisterRequest(coordinator.Slot(0, pid: 1)) { Generation = 0, Held = Held(4, 2, 0, 1) },
            new RegisterRequest(coordinator.Slot(1, pid: 3)) { Generation = -1 });
        foreach (var reply in replies)
        {
            Assert.Equal((1, ""), (reply.Generation, reply.RestoreFrom));
            Assert.Equal((0, 4, 2), (reply.Snapshot.Generation, reply.Snapshot.Step, reply.Snapshot.WorldSize));
            Assert.Equal([0, 0], reply.Snapshot.Sources);   // both slices from the survivor, new rank 0
            Assert.Equal("{\"0\":\"cursor 0 at 4\",\"1\":\"cursor 1 at 4\",\"2\":\"cursor 2 at 4\",\"3\":\"cursor 3 at 4\"}", reply.Snapshot.CursorsJson);
            Assert.Equal((4.0, -1L), (reply.Snapshot.AdamSteps, reply.Snapshot.FirstNonFinite));
        }
        var recovery = (await coordinator.Client.GetStatusAsync(new StatusRequest(), coordinator.Token)).Recoveries.Single();
        Assert.Equal(("snapshot", 4, 1), (recovery.RestoredFrom, recovery.RestoredStep, recovery.FailedAtStep - recovery.RestoredStep));
        foreach (var s in streams) s.Dispose();
        coordinator.Stop();
    }

    [Fact]
    public async Task WhenARankAndItsBuddyAreBothLostTheNewGenerationStartsFromDisk()
    {
        await using var coordinator = new TestCoordinator("two-lost", slots: 3, overrides: Elastic);
        await RegisterAll(coordinator, coordinator.Slot(0, pid: 1), coordinator.Slot(1, pid: 2), coordinator.Slot(2, pid: 3));
        Assert.All(await VoteAll(coordinator, 2, 3), r => Assert.True(r.Commit));
        var streams = await LoseAsync(coordinator, 3, lost: [1, 2]);
        // rank 1's slice lived on rank 1 and on rank 2 (its right neighbour): both gone; the survivor holds slices 0 and 2
        var replies = await RegisterAll(coordinator, new RegisterRequest(coordinator.Slot(0, pid: 1)) { Generation = 0, Held = Held(2, 3, 0, 2) },
            new RegisterRequest(coordinator.Slot(1, pid: 4)) { Generation = -1 }, new RegisterRequest(coordinator.Slot(2, pid: 5)) { Generation = -1 });
        Assert.All(replies, r => Assert.Null(r.Snapshot));
        Assert.All(replies, r => Assert.Equal("", r.RestoreFrom));   // no checkpoint was committed in this test: from the start
        var recovery = (await coordinator.Client.GetStatusAsync(new StatusRequest(), coordinator.Token)).Recoveries.Single();
        Assert.Equal(("start", 0), (recovery.RestoredFrom, recovery.RestoredStep));
        foreach (var s in streams) s.Dispose();
        coordinator.Stop();
    }

    [Fact]
    public async Task AVoteOfAnEndedGenerationIsRefused()
    {
        await using var coordinator = new TestCoordinator("stale-vote", slots: 2, overrides: Elastic);
        await RegisterAll(coordinator, coordinator.Slot(0, pid: 1), coordinator.Slot(1, pid: 2));
        var pending = coordinator.Client.SnapshotVoteAsync(new SnapshotVoteRequest { Rank = 0, Step = 2, Generation = 0, CursorsJson = "{}" },
            coordinator.Token, DateTime.UtcNow.AddSeconds(30)).ResponseAsync;
        var streams = await LoseAsync(coordinator, 2, lost: 1);
        var aborted = await Assert.ThrowsAsync<RpcException>(() => pending);   // rank 1 will never vote: the snapshot is abandoned
        Assert.Equal(StatusCode.Aborted, aborted.StatusCode);
        Assert.Contains("snapshot abandoned: generation 1 opened", aborted.Status.Detail);
        Assert.Equal(0, (await coordinator.Client.GetStatusAsync(new StatusRequest(), coordinator.Token)).SnapshotStep);
        foreach (var s in streams) s.Dispose();
        coordinator.Stop();
    }
}
