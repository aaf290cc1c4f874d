using DistTrain.Model.Inference;
using DistTrain.Model.Kernels;
using TorchSharp;
using TorchSharp.Utils;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DistTrain.Model.Layers;

/// <summary>
/// Causal self-attention through scaled_dot_product_attention. MUDDFormer layers take separate
/// Q/K/V input streams (wq, wk, wv); the other architectures use one fused wqkv.
/// </summary>
public sealed class Attention : nn.Module, IUsesKernels
{
    readonly int _nHead, _headDim;
    readonly double _normEps;
    [ComponentName(Name = "wqkv")] readonly Linear? _wqkv;
    [ComponentName(Name = "wq")] readonly Linear? _wq;
    [ComponentName(Name = "wk")] readonly Linear? _wk;
    [ComponentName(Name = "wv")] readonly Linear? _wv;
    [ComponentName(Name = "wo")] readonly Linear _wo;
    [ComponentName(Name = "q_norm")] readonly RmsNorm? _qNorm;
    [ComponentName(Name = "k_norm")] readonly RmsNorm? _kNorm;

    public Attention(ModelConfig config, bool separateStreams) : base(nameof(Attention))
    {
        _nHead = config.NHead;
        _headDim = config.HeadDim;
        _normEps = config.NormEps;
        long inner = (long)config.NHead * config.HeadDim;
        if (separateStreams)
        {
            _wq = nn.Linear(config.Dim, inner, hasBias: false);
            _wk = nn.Linear(config.Dim, inner, hasBias: false);
            _wv = nn.Linear(config.Dim, inner, hasBias: false);
        }
        else
        {
            _wqkv = nn.Linear(config.Dim, 3 * inner, hasBias: false);
        }
        _wo = nn.Linear(inner, config.Dim, hasBias: false);
        if (config.UseQkNorm)
        {
            _qNorm = new RmsNorm(config.HeadDim, config.NormEps);
            _kNorm = new RmsNorm(config.HeadDim, config.NormEps);
        }
        RegisterComponents();
    }

    public IKernels Kernels { get; set; } = ReferenceKernels.Instance;

    /// <summary>
    /// xq, xk, xv: (B, T, D) (the same tensor three times without dense streams) -> (B, T, D). cos and sin
    /// cover the T positions. With <paramref name="kv"/> the T tokens follow the cached positions: their keys
    /// and values are appended, and they attend to every cached position as well.
    /// </summary>
    public Tensor Forward(Tensor xq, Tensor xk, Tensor xv, Tensor cos, Tensor sin, LayerKv? kv = null)
    {
        using var scope = NewDisposeScope();
        long b = xq.shape[0], t = xq.shape[1];
        Tensor q, k, v;
        if (_wqkv is not null)
        {
            // unbind, not three selects: its backward stacks the three gradients in one copy, where each
            // select's backward fills a zero (B, T, 3, H, d) tensor and autograd adds the three up
            var qkv = Projection.Apply(xq, _wqkv.weight!).view(b, t, 3, _nHead, _headDim).unbind(2);
            // QK-norm (q_norm/k_norm weights, eps as their RmsNorm) and rotary: one op
            (q, k) = Kernels.QkNormRotary(qkv[0], qkv[1], _qNorm?.weight, _kNorm?.weight, _normEps, cos, sin);
            v = qkv[2];
        }
        else
        {
            // separate streams: the three projections with q and k's QK-norm and rotary as one op
            (q, k, v) = Kernels.QkvRotary([xq, xk, xv], [_wq!.weight!, _wk!.weight!, _wv!.weight!], _nHead, _qNorm?.weight, _kNorm?.weight, _normEps, cos, sin);
        }
        // (B, T, H, d) -> (B, H, T, d)
        var (keys, values) = (k.transpose(1, 2), v.transpose(1, 2));
        var mask = kv?.Mask(t, xq.device);
        if (kv is not null) (keys, values) = kv.Append(keys, values);   // (B, H, cached + T, d)
        var y = mask is null
            ? nn.functional.scaled_dot_product_attention(q.transpose(1, 2), keys, values, is_casual: true)
            : nn.functional.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask: mask);
        var output = Projection.Apply(y.transpose(1, 2).reshape(b, t, (long)_nHead * _headDim), _wo.weight!);
        return output.MoveToOuterDisposeScope();
    }
}
