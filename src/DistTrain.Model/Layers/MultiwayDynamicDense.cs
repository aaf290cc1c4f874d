using DistTrain.Model.Kernels;
using TorchSharp;
using TorchSharp.Utils;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DistTrain.Model.Layers;

/// <summary>
/// The dynamic part of a MUDD connection after layer i: per-token weights over the i+2 outputs
/// seen so far (embedding and layers 0..i), for each of C streams (Q, K, V, R; one after the last
/// layer). dw = w2(gelu(w1(rmsnorm_noscale(x)))), reshaped 'B T (C L) -> C B T L'.
/// </summary>
public sealed class MultiwayDynamicDense : nn.Module<Tensor, Tensor>, IUsesKernels
{
    readonly int _streams, _inputs;
    readonly double _eps;
    readonly Linear w1, w2;

    public MultiwayDynamicDense(ModelConfig config, int layer) : base(nameof(MultiwayDynamicDense))
    {
        _streams = config.Streams(layer);
        _inputs = layer + 2;
        _eps = config.NormEps;
        w1 = nn.Linear(config.Dim, config.DynamicDenseHidden(layer), hasBias: false);
        w2 = nn.Linear(config.DynamicDenseHidden(layer), (long)_streams * _inputs, hasBias: false);
        RegisterComponents();
    }

    public int Streams => _streams;

    public IKernels Kernels { get; set; } = ReferenceKernels.Instance;

    /// <summary>x: (B, T, D) -> dw: (C, B, T, L) with L = layer + 2.</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return FromNormed(Kernels.RmsNorm(x, null, _eps)).MoveToOuterDisposeScope();
    }

    /// <summary>The layer's output add a + b with this connection's input norm in one pass: (a + b, rmsnorm_noscale(a + b)).</summary>
    public (Tensor Sum, Tensor Normed) AddNorm(Tensor a, Tensor b) => Kernels.AddRmsNorm(a, b, null, _eps);

    /// <summary>normed = rmsnorm_noscale(x): (B, T, D) -> dw: (C, B, T, L).</summary>
    public Tensor FromNormed(Tensor normed)
    {
        using var scope = NewDisposeScope();
        var dw = Projection.Apply(nn.functional.gelu(Projection.Apply(normed, w1.weight!)), w2.weight!);
        long b = normed.shape[0], t = normed.shape[1];
        return dw.view(b, t, _streams, _inputs).permute(2, 0, 1, 3).MoveToOuterDisposeScope();
    }
}
