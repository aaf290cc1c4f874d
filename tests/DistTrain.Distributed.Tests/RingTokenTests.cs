using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using static TorchSharp.torch;

namespace DistTrain.Distributed.Tests;

/// <summary>The ring's handshake proves the job token (HMAC-SHA256 over both nonces): who does not hold it cannot join.</summary>
public class RingTokenTests
{
    [Fact(Timeout = 60_000)]
    public async Task ARankWithAnotherTokenIsRefusedAndFailsItself()
    {
        var peers = LoopbackPorts.Pick(2);
        var clock = Stopwatch.StartNew();
        var other = Ring.Dedicated(() => Assert.Throws<CommunicatorException>(() => Ring.Connect(1, 2, peers, timeoutSeconds: 3, token: "another-token")));
        (await ConnectWhenListeningAsync(peers[1])).Dispose();   // rank 1 listens before rank 0 starts
        var honest = Ring.Dedicated(() => Assert.Throws<CommunicatorException>(() => Ring.Connect(0, 2, peers, timeoutSeconds: 3)));
        var errors = await Task.WhenAll(honest, other).WaitAsync(Ring.Deadline);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"failed after {clock.Elapsed.TotalSeconds:F1} s: {errors[0].Message} | {errors[1].Message}");
        // rank 0 reached rank 1's challenge: its proof was wrong
        Assert.StartsWith($"rank 0: the process at {peers[1]} (claiming rank 1 of job 'test-job') holds another job token than this rank", errors[0].Message);
        // rank 1 met rank 0's challenge the same way, or saw rank 0 hang up on its own and gave up at its timeout
        Assert.True(errors[1].Message.Contains("holds another job token than this rank") || errors[1].Message.Contains("closed the connection instead of proving the job token"), errors[1].Message);
    }

    [Fact(Timeout = 60_000)]
    public async Task AStrangerWithoutTheTokenIsRefusedAndTheHonestRingStillWorks()
    {
        var peers = LoopbackPorts.Pick(2);
        // rank 1 listens; its left neighbour, rank 0, is not there yet
        var rank1 = Ring.Dedicated(() => AllReduce(1, peers));

        // a stranger on rank 0's behalf: the job's public name and rank 0's identity, a guessed token, and it sends its proof regardless
        using var stranger = await ConnectWhenListeningAsync(peers[1]);
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var hello = RingHandshake.NewHello(RingHandshake.ProtocolVersion, 0, 2, "test-job");
        await stranger.SendAsync(hello.Wire, SocketFlags.None, limit.Token);
        var challenge = await RingHandshake.ReadChallengeAsync(stranger, limit.Token);
        Assert.True(challenge.Accepted);
        Assert.Equal("test-job", challenge.Text);
        var guessed = RingHandshake.Proof(Encoding.UTF8.GetBytes("guessed-token"), "connector", hello.Wire, challenge.Signed);
        await stranger.SendAsync(RingHandshake.EncodeProof(guessed), SocketFlags.None, limit.Token);
        var refusal = await RingHandshake.ReadVerdictAsync(stranger, limit.Token);
        Assert.NotNull(refusal);
        Assert.Contains("its proof of the job token is wrong", refusal);
        // and nothing it sends is read: rank 1 has closed the connection
        Assert.Equal(0, await stranger.ReceiveAsync(new byte[1], SocketFlags.None, limit.Token));

        // the real rank 0 joins: the ring reduces as if the stranger had never been there
        var rank0 = Ring.Dedicated(() => AllReduce(0, peers));
        var results = await Task.WhenAll(rank0, rank1).WaitAsync(Ring.Deadline);
        Assert.All(results, r => Assert.All(r, v => Assert.Equal(0.5f, v)));
    }

    static float[] AllReduce(int rank, IReadOnlyList<System.Net.IPEndPoint> peers)
    {
        using var comm = Ring.Connect(rank, 2, peers);
        using var t = full(4, (float)rank);
        comm.AllReduceMean(t);
        return t.data<float>().ToArray();
    }

    static async Task<Socket> ConnectWhenListeningAsync(System.Net.IPEndPoint at)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var socket = new Socket(at.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await socket.ConnectAsync(at);
                return socket;
            }
            catch (SocketException) when (clock.Elapsed < TimeSpan.FromSeconds(20))
            {
                socket.Dispose();
                await Task.Delay(20);
            }
        }
    }
}
