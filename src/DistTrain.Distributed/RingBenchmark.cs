using System.Diagnostics;
using static TorchSharp.torch;

namespace DistTrain.Distributed;

/// <summary>
/// Ring all-reduce throughput: W ranks as threads of this process over loopback, so it measures the ring's
/// own cost (copies, reduction, syscalls) on one host's cores and memory, not a network.
/// </summary>
public static class RingBenchmark
{
    /// <summary>
    /// For each size in bytes (float32 buffers): seconds per AllReduceMean, averaged over
    /// <paramref name="iterations"/> after one warm-up, and the bus bandwidth 2(W-1)/W · bytes / seconds in GB/s
    /// (10^9 bytes), the figure that is comparable across world sizes (NCCL-tests' busbw).
    /// </summary>
    public static IReadOnlyList<(long Bytes, double Seconds, double BusBandwidthGBps)> Run(int worldSize, long[] sizes, int iterations)
    {
        if (worldSize < 2) throw new ArgumentOutOfRangeException(nameof(worldSize), worldSize, "a ring benchmark needs at least 2 ranks");
        if (iterations < 1) throw new ArgumentOutOfRangeException(nameof(iterations), iterations, "at least 1 iteration");
        var peers = LoopbackPorts.Pick(worldSize);
        var token = Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));   // ranks of this process only
        var seconds = new double[sizes.Length];
        var comms = new RingCommunicator?[worldSize];
        var errors = new Exception?[worldSize];
        var threads = Enumerable.Range(0, worldSize).Select(rank => new Thread(() =>
        {
            try
            {
                using var comm = comms[rank] = RingCommunicator.Connect(rank, worldSize, peers, "ring-benchmark", token, TimeSpan.FromSeconds(60));
                for (int i = 0; i < sizes.Length; i++)
                {
                    using var buffer = ones(sizes[i] / sizeof(float), ScalarType.Float32);
                    comm.AllReduceMean(buffer);
                    comm.Barrier();
                    var clock = Stopwatch.StartNew();
                    for (int n = 0; n < iterations; n++) comm.AllReduceMean(buffer);
                    comm.Barrier();   // the slowest rank's finish
                    if (rank == 0) seconds[i] = clock.Elapsed.TotalSeconds / iterations;
                }
            }
            catch (Exception e)
            {
                errors[rank] = e;
                foreach (var c in comms) c?.Abort();
            }
        }) { IsBackground = true, Name = $"ring-bench-{rank}" }).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        if (errors.FirstOrDefault(e => e is not null) is { } error)
            throw new InvalidOperationException($"the ring benchmark failed: {error.Message}", error);
        double factor = 2.0 * (worldSize - 1) / worldSize;
        return sizes.Select((bytes, i) => (bytes, seconds[i], factor * bytes / seconds[i] / 1e9)).ToList();
    }
}
