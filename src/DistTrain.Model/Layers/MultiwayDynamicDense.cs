using DistTrain.Model.Kernels;
using TorchSharp;
using TorchSharp.Utils;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

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
        var dw = w2.forward(nn.functional.gelu(w1.forward(Kernels.RmsNorm(x, null, _eps))));
        long b = x.shape[0], t = x.shape[1];
        return dw.view(b, t, _streams, _inputs).permute(2, 0, 1, 3).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Mixes the outputs h_0..h_{L-1} (each (B, T, D)) with weights dw (C, B, T, L):
    /// stream c = Σ_j dw[c, :, :, j] · h_j, as one batched matrix product per token (see <see cref="MixFunction"/>).
    /// </summary>
    public static Tensor[] Mix(IReadOnlyList<Tensor> hiddens, Tensor dw)
    {
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        var streams = MixFunction.apply([dw, .. hiddens]);
        // TorchSharp's node keeps an empty_like of each output: leaving this scope frees them
        return streams.Select(t => t.MoveToOuterDisposeScope()).ToArray();
    }
}

/// <summary>
/// The dense mixing as a custom autograd function. Per token, the C streams are (C × L) @ (L × D):
/// the hiddens are stacked into (B·T, L, D) for one batched matmul, read once instead of once per
/// stream and term, and the stack is a temporary: backward keeps only dw and the hiddens (alive
/// anyway) and stacks again. A loop of multiply-adds (the official code) does 4·L passes over
/// hidden-sized tensors per layer forward and more backward.
/// </summary>
public sealed class MixFunction : MultiTensorFunction<MixFunction>
{
    public override string Name => nameof(MixFunction);

    /// <summary>vars: dw (C, B, T, L), h_0..h_{L-1} (B, T, D) -> C streams (B, T, D).</summary>
    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var tensors = vars.Cast<Tensor>().ToList();
        ctx.save_for_backward(tensors);
        using var scope = NewDisposeScope();
        var (dw, hiddens) = (tensors[0], tensors.Skip(1).ToList());
        long c = dw.shape[0], b = dw.shape[1], t = dw.shape[2], l = dw.shape[3], d = hiddens[0].shape[^1];
        var stacked = stack(hiddens, dim: 2).view(b * t, l, d);               // (BT, L, D)
        var weights = dw.permute(1, 2, 0, 3).reshape(b * t, c, l);            // (BT, C, L)
        var mixed = bmm(weights.to(stacked.dtype), stacked).view(b, t, c, d);  // (B, T, C, D)
        return Enumerable.Range(0, (int)c).Select(i => mixed.select(2, i).contiguous().MoveToOuterDisposeScope()).ToList();
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReturnedGradients.Release();
        var saved = ctx.get_saved_variables();
        List<Tensor> grads;
        using (var scope = NewDisposeScope())
        {
            var (dw, hiddens) = (saved[0], saved.Skip(1).ToList());
            long c = dw.shape[0], b = dw.shape[1], t = dw.shape[2], l = dw.shape[3], d = hiddens[0].shape[^1];
            var stacked = stack(hiddens, dim: 2).view(b * t, l, d);                                    // (BT, L, D)
            var grad = stack(gradOutputs.Select(g => g ?? zeros_like(hiddens[0])).ToList(), dim: 2).view(b * t, c, d);   // (BT, C, D)
            var weights = dw.permute(1, 2, 0, 3).reshape(b * t, c, l).to(stacked.dtype);
            var gradDw = bmm(grad, stacked.transpose(1, 2)).view(b, t, c, l).permute(2, 0, 1, 3).to(dw.dtype).contiguous();   // (C, B, T, L)
            var gradH = bmm(weights.transpose(1, 2), grad).view(b, t, l, d);                           // (B, T, L, D)
            grads = [gradDw, .. Enumerable.Range(0, (int)l).Select(j => gradH.select(2, j).contiguous())];
            foreach (var g in grads) g.MoveToOuterDisposeScope();
        }
        foreach (var s in saved) s.Dispose();
        foreach (var g in gradOutputs) g?.Dispose();
        ReturnedGradients.Keep(grads);
        return grads;
    }
}
