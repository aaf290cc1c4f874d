using static TorchSharp.torch;

namespace DistTrain.Distributed;

/// <summary>
/// All-reduces a flat gradient buffer bucket by bucket: consecutive views of about bucketBytes, each
/// reduced in turn. Bounds the staging copy a bf16 buffer needs (one bucket in fp32, not the whole
/// buffer) and is the unit a later overlap with backward would hand over.
/// </summary>
public static class GradientBuckets
{
    /// <summary>In place: every rank ends with the mean over ranks of <paramref name="flat"/> (contiguous, any shape).</summary>
    public static void AllReduceMean(ICommunicator comm, Tensor flat, long bucketBytes)
    {
        ArgumentNullException.ThrowIfNull(comm);
        ArgumentNullException.ThrowIfNull(flat);
        if (bucketBytes <= 0) throw new ArgumentOutOfRangeException(nameof(bucketBytes), bucketBytes, "bucket size must be positive");
        if (comm.WorldSize == 1) return;
        if (!flat.is_contiguous()) throw new ArgumentException("the gradient buffer must be contiguous", nameof(flat));
        long count = flat.NumberOfElements, perBucket = Math.Max(1, bucketBytes / flat.ElementSize);
        using var line = flat.view(-1);   // (N,) alias of the buffer
        for (long start = 0; start < count; start += perBucket)
        {
            using var bucket = line.narrow(0, start, Math.Min(perBucket, count - start));
            comm.AllReduceMean(bucket);
        }
    }

    /// <summary>Bucket size in bytes for a size in MB (2^20 bytes), as configs give it.</summary>
    public static long BytesFromMegabytes(double megabytes) => (long)(megabytes * (1 << 20));
}
