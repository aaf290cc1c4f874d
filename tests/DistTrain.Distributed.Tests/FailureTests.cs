using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Distributed.Tests;

public class FailureTests
{
    [Fact]
    public async Task APeerThatNeverShowsUpFailsWithinTheTimeout()
    {
        var peers = LoopbackPorts.Pick(2);
        var clock = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<CommunicatorException>(() =>
            Ring.Dedicated(() => RingCommunicator.Connect(0, 2, peers, "lonely", Ring.Token, TimeSpan.FromSeconds(1))).WaitAsync(Ring.Deadline));
        Assert.InRange(clock.Elapsed.TotalSeconds, 0.9, 3.0);
        Assert.Equal(0, e.Rank);
        Assert.Equal(1, e.PeerRank);
        Assert.Contains("rank 1", e.Message);
        Assert.Contains(peers[1].ToString(), e.Message);
    }

    [Fact]
    public async Task PeersStartingAtDifferentTimesStillConnect()
    {
        var peers = LoopbackPorts.Pick(3);
        var ranks = Enumerable.Range(0, 3).Select(rank => Ring.Dedicated(() =>
        {
            Thread.Sleep(400 * rank);   // rank 0 retries connecting to rank 1 until it listens
            using var comm = Ring.Connect(rank, 3, peers);
            using var t = full(5, (float)rank);
            comm.AllReduceMean(t);
            return t.data<float>().ToArray();
        })).ToArray();
        var results = await Task.WhenAll(ranks).WaitAsync(Ring.Deadline);
        Assert.All(results, r => Assert.All(r, v => Assert.Equal(1f, v)));
    }

    [Fact]
    public async Task AbortOnOneRankFailsTheOthersPendingAllReduceWithinTwoSeconds()
    {
        const int w = 3;
        var peers = LoopbackPorts.Pick(w);
        var comms = new RingCommunicator[w];
        await Task.WhenAll(Enumerable.Range(0, w).Select(r => Ring.Dedicated(() => comms[r] = Ring.Connect(r, w, peers)))).WaitAsync(Ring.Deadline);
        try
        {
            var abortedAt = new TaskCompletionSource<TimeSpan>();
            var clock = Stopwatch.StartNew();
            var waiting = Enumerable.Range(1, w - 1).Select(r => Ring.Dedicated(() =>
            {
                using var t = ones(1 << 20);
                var e = Assert.Throws<CommunicatorException>(() => comms[r].AllReduceMean(t));
                return (clock.Elapsed, e);
            })).ToArray();
            Thread.Sleep(300);   // ranks 1 and 2 are blocked: rank 0 never joins
            Assert.All(waiting, t => Assert.False(t.IsCompleted));
            var at = clock.Elapsed;
            comms[0].Abort();
            var failures = await Task.WhenAll(waiting).WaitAsync(TimeSpan.FromSeconds(10));
            foreach (var (when, e) in failures)
            {
                Assert.True(when - at < TimeSpan.FromSeconds(2), $"rank {e.Rank} failed {(when - at).TotalSeconds:F2} s after the abort");
                Assert.Contains("rank", e.Message);
            }
            using var t0 = ones(4);
            Assert.Contains("aborted", Assert.Throws<CommunicatorException>(() => comms[0].AllReduceMean(t0)).Message);
        }
        finally
        {
            foreach (var c in comms) c?.Dispose();
        }
    }

    [Fact]
    public async Task AbortFromAnotherThreadEndsThisRanksOwnPendingCollective()
    {
        var peers = LoopbackPorts.Pick(2);
        var comms = new RingCommunicator[2];
        await Task.WhenAll(Enumerable.Range(0, 2).Select(r => Ring.Dedicated(() => comms[r] = Ring.Connect(r, 2, peers)))).WaitAsync(Ring.Deadline);
        try
        {
            var pending = Ring.Dedicated(() => Assert.Throws<CommunicatorException>(() => comms[0].Barrier()));
            Thread.Sleep(200);
            comms[0].Abort();
            var e = await pending.WaitAsync(TimeSpan.FromSeconds(2));
            Assert.Contains("aborted", e.Message);
        }
        finally
        {
            foreach (var c in comms) c?.Dispose();
        }
    }

    [Fact]
    public async Task ARankLaterThanTheTimeoutFailsTheCollectiveWithATimeout()
    {
        var peers = LoopbackPorts.Pick(2);
        var ranks = Enumerable.Range(0, 2).Select(r => Ring.Dedicated(() =>
        {
            using var comm = Ring.Connect(r, 2, peers, timeoutSeconds: 1);
            using var t = ones(1000);
            if (r == 1) Thread.Sleep(3000);
            var clock = Stopwatch.StartNew();
            var e = Assert.Throws<CommunicatorException>(() => comm.AllReduceMean(t));
            return (clock.Elapsed, e);
        })).ToArray();
        var results = await Task.WhenAll(ranks).WaitAsync(Ring.Deadline);
        Assert.Contains("timeout", results[0].e.Message);
        Assert.Equal(1, results[0].e.PeerRank);
        Assert.InRange(results[0].Elapsed.TotalSeconds, 0.9, 2.5);
        Assert.Contains("closed the connection", results[1].e.Message);   // rank 0 gave up and closed
    }

    [Fact]
    public async Task AWrongJobIdIsRefusedOnBothEnds()
    {
        var peers = LoopbackPorts.Pick(2);
        var clock = Stopwatch.StartNew();
        var ranks = new[] { "job-a", "job-b" }.Select((job, r) => Ring.Dedicated(() =>
            Assert.Throws<CommunicatorException>(() => Ring.Connect(r, 2, peers, jobId: job)))).ToArray();
        var errors = await Task.WhenAll(ranks).WaitAsync(Ring.Deadline);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), "refused promptly, not at the 20 s timeout");
        Assert.All(errors, e => Assert.Contains("give each job its own ports", e.Message));
        Assert.Contains(errors, e => e.Message.Contains("'job-a'") && e.Message.Contains("'job-b'"));
    }

    [Fact]
    public async Task MismatchedCollectivesAreNamedInsteadOfCorruptingData()
    {
        var errors = await Ring.RunAsync(2, comm =>
        {
            using var t = ones(10 + comm.Rank);
            return Assert.Throws<CommunicatorException>(() => comm.AllReduceMean(t));
        });
        Assert.Contains(errors, e => e.Message.Contains("all-reduce of 40 bytes") && e.Message.Contains("all-reduce of 44 bytes"));
        Assert.Contains(errors, e => e.Message.Contains("same collectives"));
    }
}
