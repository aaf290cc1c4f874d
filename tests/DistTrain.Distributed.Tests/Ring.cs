using System.Net;

namespace DistTrain.Distributed.Tests;

/// <summary>W ranks as threads of the test process, joined in a ring over loopback, with a deadline for the whole run.</summary>
static class Ring
{
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    /// <summary>The job token every honest rank of these tests holds.</summary>
    public const string Token = "test-token";

    /// <summary>Runs body on every rank of a fresh ring; the results by rank. Fails (never hangs) past the deadline.</summary>
    public static async Task<T[]> RunAsync<T>(int worldSize, Func<RingCommunicator, T> body, TimeSpan? deadline = null)
    {
        var peers = LoopbackPorts.Pick(worldSize);
        var comms = new RingCommunicator?[worldSize];
        var ranks = Enumerable.Range(0, worldSize).Select(rank => Dedicated(() =>
        {
            using var comm = comms[rank] = RingCommunicator.Connect(rank, worldSize, peers, "test-job", Token, TimeSpan.FromSeconds(20));
            return body(comm);
        })).ToArray();
        try
        {
            return await Task.WhenAll(ranks).WaitAsync(deadline ?? Deadline);
        }
        catch (TimeoutException)
        {
            foreach (var c in comms) c?.Abort();
            throw;
        }
    }

    public static Task RunAsync(int worldSize, Action<RingCommunicator> body, TimeSpan? deadline = null)
        => RunAsync(worldSize, c => { body(c); return 0; }, deadline);

    /// <summary>A task on its own thread: ranks block in socket calls and must not starve the thread pool.</summary>
    public static Task<T> Dedicated<T>(Func<T> body)
        => Task.Factory.StartNew(body, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    public static Task Dedicated(Action body)
        => Task.Factory.StartNew(body, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    public static RingCommunicator Connect(int rank, int worldSize, IReadOnlyList<IPEndPoint> peers, string jobId = "test-job", double timeoutSeconds = 20, string token = Token)
        => RingCommunicator.Connect(rank, worldSize, peers, jobId, token, TimeSpan.FromSeconds(timeoutSeconds));
}
