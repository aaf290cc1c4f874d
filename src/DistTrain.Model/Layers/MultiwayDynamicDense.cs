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
public sealed class MultiwayDynamicDense : nn.Module<Tensor, Tensor>
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

    /// <summary>x: (B, T, D) -> dw: (C, B, T, L) with L = layer + 2.</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var dw = w2.forward(nn.functional.gelu(w1.forward(RmsNorm.Normalize(x, _eps))));
        long b = x.shape[0], t = x.shape[1];
        return dw.view(b, t, _streams, _inputs).permute(2, 0, 1, 3).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Mixes the outputs h_0..h_{L-1} (each (B, T, D)) with weights dw (C, B, T, L):
    /// stream c = Σ_j dw[c, :, :, j, None] · h_j. A loop of multiply-adds keeps only the
    /// existing h_j and the small weights alive for backward (no stacked copy per layer).
    /// </summary>
    public static Tensor[] Mix(IReadOnlyList<Tensor> hiddens, Tensor dw)
    {
        long streams = dw.shape[0];
        var mixed = new Tensor[streams];
        for (int c = 0; c < streams; c++)
        {
            using var scope = NewDisposeScope();
            var weights = dw[c].unsqueeze(-1);   // (B, T, L, 1)
            var acc = hiddens[0] * weights.select(2, 0);
            for (int j = 1; j < hiddens.Count; j++)
                acc = acc.addcmul(weights.select(2, j), hiddens[j], 1);
            mixed[c] = acc.MoveToOuterDisposeScope();
        }
        return mixed;
    }
}
