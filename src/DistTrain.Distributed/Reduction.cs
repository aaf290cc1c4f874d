using System.Numerics;
using System.Runtime.InteropServices;

namespace DistTrain.Distributed;

/// <summary>The element types the ring reduces natively; bf16 and fp16 are staged through <see cref="Float32"/>.</summary>
internal enum ReduceType
{
    None = 0,
    Float32 = 1,
    Float64 = 2,
}

/// <summary>Element-wise kernels over raw segments of tensor memory (SIMD through <see cref="Vector{T}"/>).</summary>
internal static unsafe class Reduction
{
    /// <summary>dst += src over <paramref name="bytes"/> bytes.</summary>
    public static void Add(ReduceType type, nint dst, nint src, int bytes)
    {
        switch (type)
        {
            case ReduceType.Float32: Add(new Span<float>((void*)dst, bytes / sizeof(float)), new ReadOnlySpan<float>((void*)src, bytes / sizeof(float))); break;
            case ReduceType.Float64: Add(new Span<double>((void*)dst, bytes / sizeof(double)), new ReadOnlySpan<double>((void*)src, bytes / sizeof(double))); break;
            default: throw new InvalidOperationException($"no reduction for {type}");
        }
    }

    /// <summary>dst /= divisor over <paramref name="bytes"/> bytes.</summary>
    public static void Divide(ReduceType type, nint dst, int bytes, int divisor)
    {
        switch (type)
        {
            case ReduceType.Float32: Divide(new Span<float>((void*)dst, bytes / sizeof(float)), divisor); break;
            case ReduceType.Float64: Divide(new Span<double>((void*)dst, bytes / sizeof(double)), divisor); break;
            default: throw new InvalidOperationException($"no reduction for {type}");
        }
    }

    static void Add<T>(Span<T> dst, ReadOnlySpan<T> src) where T : unmanaged, INumberBase<T>
    {
        var dv = MemoryMarshal.Cast<T, Vector<T>>(dst);
        var sv = MemoryMarshal.Cast<T, Vector<T>>(src);
        for (int i = 0; i < dv.Length; i++) dv[i] += sv[i];
        for (int i = dv.Length * Vector<T>.Count; i < dst.Length; i++) dst[i] += src[i];
    }

    static void Divide<T>(Span<T> dst, int divisor) where T : unmanaged, INumberBase<T>
    {
        // a true division, not a multiply by 1/W: the mean of integer-valued data is then exactly what a scalar sum / W gives
        var d = T.CreateChecked(divisor);
        var dVector = new Vector<T>(d);
        var dv = MemoryMarshal.Cast<T, Vector<T>>(dst);
        for (int i = 0; i < dv.Length; i++) dv[i] /= dVector;
        for (int i = dv.Length * Vector<T>.Count; i < dst.Length; i++) dst[i] /= d;
    }
}
