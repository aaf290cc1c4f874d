namespace DistTrain.Cuda;

/// <summary>How many of our kernels were launched in this process, on any thread (autograd's backward thread included): the benchmark's per-step count.</summary>
public static class KernelLaunches
{
    static long _count;

    public static long Count => Interlocked.Read(ref _count);

    internal static void Add() => Interlocked.Increment(ref _count);
}
