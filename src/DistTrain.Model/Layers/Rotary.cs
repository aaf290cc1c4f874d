using static TorchSharp.torch;

namespace DistTrain.Model.Layers;

/// <summary>
/// Rotary embedding in the official MUDDFormer layout ('half' mode): pairs (x[i], x[i + d/2]) are
/// rotated and written out interleaved. q and k get the same permutation, so attention scores
/// are those of standard rotary. The cos/sin table is rounded to bf16 as the official cache is (or
/// kept in fp32, as transformers' Llama computes it: <see cref="RotaryPrecision.Fp32"/>).
/// </summary>
/// <remarks>
/// The pairs are those of transformers' rotate_half (x[i] with x[i + d/2], frequency base^(-2i/d)); only
/// the order in which the rotated values are written differs, and q and k share it, so q·k and the
/// attention output equal Llama's with the same wq/wk rows: a Llama export copies them unpermuted.
/// </remarks>
public static class Rotary
{
    /// <summary>(T, 1, d/2) cos and sin tables in fp32 for positions 0..T-1, their values rounded to <paramref name="precision"/>.</summary>
    public static (Tensor Cos, Tensor Sin) Tables(long seqLen, long headDim, double ropeBase, Device device, RotaryPrecision precision = RotaryPrecision.Bf16)
    {
        var table = precision == RotaryPrecision.Bf16 ? ScalarType.BFloat16 : ScalarType.Float32;
        using var scope = NewDisposeScope();
        var exponents = arange(Scalars.Of(0L), Scalars.Of(headDim), Scalars.Of(2L), ScalarType.Float32)[..(int)(headDim / 2)].div(Scalars.Of(headDim));
        var freqs = pow(tensor(ropeBase), exponents).reciprocal();              // 1 / base^(2i/d)
        var angles = outer(arange(Scalars.Of(0L), Scalars.Of(seqLen), Scalars.One, ScalarType.Float32), freqs);
        var cos = angles.cos().to(table).to(ScalarType.Float32).unsqueeze(1).to(device);
        var sin = angles.sin().to(table).to(ScalarType.Float32).unsqueeze(1).to(device);
        return (cos.MoveToOuterDisposeScope(), sin.MoveToOuterDisposeScope());
    }

    /// <summary>x: (B, T, H, d) -> (B, T, H, d), computed in fp32, returned in x's dtype.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var xf = Precision.Upcast(x);
        var half = x.shape[^1] / 2;
        var x0 = xf[.., .., .., ..(int)half];
        var x1 = xf[.., .., .., (int)half..];
        var rotated = stack([x0 * cos - x1 * sin, (x1 * cos).Plus(x0 * sin)], -1).flatten(3);
        return rotated.to(x.dtype).MoveToOuterDisposeScope();
    }
}
