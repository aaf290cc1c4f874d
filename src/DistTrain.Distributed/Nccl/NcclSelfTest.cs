using System.Diagnostics;
using System.Globalization;
using System.Text;
using DistTrain.Model;
using TorchSharp;
using static DistTrain.Distributed.Nccl.NcclNative;
using static TorchSharp.torch;

namespace DistTrain.Distributed.Nccl;

/// <summary>
/// A one-GPU check of the NCCL path on this host: libraries found, a world-size-1 communicator,
/// all-reduce (float32 and bfloat16), broadcast, barrier, argument checks, abort of an init that
/// waits for a missing rank, and the time of a 64 MiB all-reduce.
/// </summary>
public static class NcclSelfTest
{
    const int Elements = 1 << 20;                 // 1M
    const int TimedElements = 64 << 20 >> 2;      // 64 MiB of float32
    const int TimedIterations = 20;

    /// <summary>Runs the checks on <paramref name="cudaDevice"/>; returns a report, or throws naming the check that failed.</summary>
    public static string Run(int cudaDevice)
    {
        var report = new StringBuilder();
        void Line(string text) => report.AppendLine(text);

        var uniqueId = NcclCommunicator.CreateUniqueId();   // loads CUDA, NCCL and the CUDA runtime
        _ = cudaRuntimeGetVersion(out int runtime);
        _ = cudaDriverGetVersion(out int driver);
        Line($"NCCL {NcclCommunicator.Version} from {NcclLibraries.NcclPath}");
        Line($"CUDA runtime {CudaVersion(runtime)} from {NcclLibraries.CudartPath}; driver supports CUDA {CudaVersion(driver)}");

        var initClock = Stopwatch.StartNew();
        using var comm = new NcclCommunicator(0, 1, uniqueId, cudaDevice, initTimeout: TimeSpan.FromMinutes(1));
        Line($"communicator: rank 0 of 1 on cuda:{cudaDevice}, ready in {initClock.Elapsed.TotalMilliseconds:F0} ms");

        var device = new Device(DeviceType.CUDA, cudaDevice);
        using (NewDisposeScope())
        {
            // k/4 for k < 2^20 is exact in float32, and (k mod 1001 - 500)/8 in bfloat16: a mean over one rank must not move them
            var expected32 = arange(Scalars.Of(0L), Scalars.Of(Elements), Scalars.One, ScalarType.Float32, device).Times(0.25);
            var x32 = expected32.clone();
            comm.AllReduceMean(x32);
            comm.Synchronize();
            Expect(x32, expected32, "all-reduce mean, float32, 1M elements");

            var expected16 = arange(Scalars.Of(0L), Scalars.Of(Elements), Scalars.One, ScalarType.Int64, device).remainder(Scalars.Of(1001L)).Plus(-500).to(ScalarType.Float32).div(Scalars.Of(8L)).to(ScalarType.BFloat16);
            var x16 = expected16.clone();
            comm.AllReduceMean(x16);
            comm.Synchronize();
            Expect(x16, expected16, "all-reduce mean, bfloat16, 1M elements");

            var b = expected32.clone();
            comm.Broadcast(b, root: 0);
            comm.Synchronize();
            Expect(b, expected32, "broadcast from rank 0, float32");

            comm.Barrier();
            Line("all-reduce mean (float32, bfloat16), broadcast, barrier: values as expected");

            ExpectArgumentError(() => comm.AllReduceMean(zeros(4)), "a CPU tensor");
            ExpectArgumentError(() => comm.AllReduceMean(zeros(4, 4, device: device).t()), "a non-contiguous tensor");
            ExpectArgumentError(() => comm.AllReduceMean(zeros(4, ScalarType.Int64, device: device)), "an int64 tensor for a mean");
            Line("CPU, non-contiguous and integer tensors: refused with an ArgumentException");
        }

        Line(AbortOfPendingInit(cudaDevice));
        Line(TimeAllReduce(comm, device));
        return report.ToString();
    }

    /// <summary>An init for world size 2 whose rank 1 never comes must end when its token fires, not hang.</summary>
    static string AbortOfPendingInit(int cudaDevice)
    {
        var lonelyId = NcclCommunicator.CreateUniqueId();
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        var clock = Stopwatch.StartNew();
        try
        {
            using var never = new NcclCommunicator(0, 2, lonelyId, cudaDevice, cancellationToken: cancel.Token);
        }
        catch (CommunicatorException)
        {
            // NCCL's bootstrap root thread for lonelyId keeps listening until the process exits
            return string.Create(CultureInfo.InvariantCulture,
                $"abort: an init waiting for a missing rank ended {clock.Elapsed.TotalMilliseconds - 2000:F0} ms after its cancellation");
        }
        throw new CommunicatorException("self-test: a world-size-2 init with no rank 1 completed; it should have waited until cancelled");
    }

    static string TimeAllReduce(NcclCommunicator comm, Device device)
    {
        using var scope = NewDisposeScope();
        var buffer = ones(TimedElements, ScalarType.Float32, device);
        for (int i = 0; i < 3; i++)
            comm.AllReduceMean(buffer);
        cuda.synchronize(device);
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < TimedIterations; i++)
            comm.AllReduceMean(buffer);
        cuda.synchronize(device);
        double ms = clock.Elapsed.TotalMilliseconds / TimedIterations;
        Expect(buffer, ones_like(buffer), "64 MiB all-reduce mean of ones");
        double gbPerSecond = TimedElements * 4.0 / (ms * 1e6);
        // with one rank NCCL never leaves the GPU: this times the launch path, not a network
        return string.Create(CultureInfo.InvariantCulture,
            $"all-reduce mean of 64 MiB float32, 1 rank: {ms:F3} ms ({gbPerSecond:F0} GB/s algorithm bandwidth; one rank has no network part)");
    }

    static void Expect(Tensor actual, Tensor expected, string what)
    {
        if (actual.allclose(expected, rtol: 0, atol: 0))
            return;
        using var diff = (actual.to(ScalarType.Float64) - expected.to(ScalarType.Float64)).abs();
        throw new CommunicatorException(string.Create(CultureInfo.InvariantCulture,
            $"self-test: {what}: values changed (max |difference| {diff.max().item<double>()}, {diff.count_nonzero().item<long>()} of {diff.numel()} elements)"));
    }

    static void ExpectArgumentError(Action call, string what)
    {
        try
        {
            call();
        }
        catch (ArgumentException)
        {
            return;
        }
        throw new CommunicatorException($"self-test: {what} was accepted; it should be refused with an ArgumentException");
    }

    /// <summary>CUDA's version code 13000 as "13.0".</summary>
    static string CudaVersion(int code) => $"{code / 1000}.{code % 1000 / 10}";
}
