using System.Collections.Concurrent;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Model;

/// <summary>
/// Every TorchSharp <see cref="Scalar"/> that DistTrain passes to libtorch comes from here.
/// TorchSharp frees a Scalar's native value in its finalizer and does not keep the Scalar
/// reachable during the native call that reads it — also the ones it makes itself: `a + b` and
/// `add_(t)` pass a temporary alpha = 1, `x + 1e-5` a temporary 1e-5. A GC started by another
/// thread (a checkpoint write, the data reader, gRPC) while such a call runs frees the value under
/// libtorch: "Unknown scalar type" / "INTERNAL ASSERT FAILED at Scalar.h" (issue 13). Constants
/// here live for the process; values that change (the learning rate) are <see cref="Owned"/> and
/// disposed by a `using`, which keeps them alive past the calls that read them.
/// ScalarLifetimeTests scans the IL of every DistTrain assembly for any other Scalar.
/// </summary>
public static class Scalars
{
    static readonly ConcurrentDictionary<double, Scalar> Doubles = new();
    static readonly ConcurrentDictionary<long, Scalar> Longs = new();

    public static readonly Scalar One = Of(1L);

    /// <summary>A constant (eps, betas, a config value): one Scalar per value for the life of the process.</summary>
    public static Scalar Of(double value) => Doubles.GetOrAdd(value, v => v.ToScalar());

    /// <summary>An integer constant, as <see cref="Of(double)"/>.</summary>
    public static Scalar Of(long value) => Longs.GetOrAdd(value, v => v.ToScalar());

    /// <summary>A value that changes every step: the caller disposes it (`using var s = Scalars.Owned(lr)`).</summary>
    public static Scalar Owned(double value) => value.ToScalar();

    /// <summary>An integer that changes every step, as <see cref="Owned(double)"/>.</summary>
    public static Scalar Owned(long value) => value.ToScalar();

    /// <summary>a + b (TorchSharp's `+` passes an unrooted alpha).</summary>
    public static Tensor Plus(this Tensor a, Tensor b) => a.add(b, One);

    /// <summary>a + constant.</summary>
    public static Tensor Plus(this Tensor a, double constant) => a.add(Of(constant), One);

    /// <summary>a += b, in place.</summary>
    public static Tensor PlusInPlace(this Tensor a, Tensor b) => a.add_(b, One);

    /// <summary>a += constant, in place.</summary>
    public static Tensor PlusInPlace(this Tensor a, double constant) => a.add_(Of(constant), One);

    /// <summary>a · constant.</summary>
    public static Tensor Times(this Tensor a, double constant) => a.mul(Of(constant));
}
