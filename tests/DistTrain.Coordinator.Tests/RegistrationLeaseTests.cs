using DistTrain.Protocol.V1;
using Grpc.Core;

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
        await using var coordinator = new TestCoordinator("lease", slots: 2);
        var (client, token) = (coordinator.Client, coordinator.Token);
        RegisterRequest Slot(int slot, int pid) => coordinator.Slot(slot, pid);
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
    }
}
