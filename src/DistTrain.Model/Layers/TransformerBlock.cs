using DistTrain.Model.Inference;
using TorchSharp;
using TorchSharp.Utils;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DistTrain.Model.Layers;

/// <summary>
/// Pre-norm block: h = r + attn(norm(q), norm(k), norm(v)); out = h + ffn(ffn_norm(h)).
/// Without dense streams q = k = v = r = x. With MUDD streams (layers after the first) the four
/// inputs differ, and sepln gives each of Q, K, V its own norm (attention_norms.{0..2}). h's add
/// and ffn_norm(h) are one kernel op (<see cref="Kernels.IKernels.AddRmsNorm"/>); out's add is left
/// to the norm that reads it next (<see cref="Residual"/>).
/// </summary>
public sealed class TransformerBlock : nn.Module
{
    [ComponentName(Name = "attention")] readonly Attention _attention;
    [ComponentName(Name = "feed_forward")] readonly FeedForward _feedForward;
    [ComponentName(Name = "ffn_norm")] readonly RmsNorm _ffnNorm;
    [ComponentName(Name = "attention_norm")] readonly RmsNorm? _attentionNorm;
    [ComponentName(Name = "attention_norms")] readonly ModuleList<RmsNorm>? _attentionNorms;

    public TransformerBlock(ModelConfig config, int layer) : base(nameof(TransformerBlock))
    {
        bool mudd = config.Arch == Architecture.MUDDFormer;
        _attention = new Attention(config, separateStreams: mudd);
        _feedForward = new FeedForward(config.Dim, config.FfnWidth(layer));
        _ffnNorm = new RmsNorm(config.Dim, config.NormEps);
        if (mudd && config.Sepln && layer > 0)
            _attentionNorms = new ModuleList<RmsNorm>(Enumerable.Range(0, 3).Select(_ => new RmsNorm(config.Dim, config.NormEps)).ToArray());
        else
            _attentionNorm = new RmsNorm(config.Dim, config.NormEps);
        RegisterComponents();
    }

    /// <summary>
    /// Single residual stream: x (B, T, D) -> (B, T, D), the output's add done inside the FFN's last GEMM; kv: this
    /// layer's cache (<see cref="Attention.Forward"/>); valueNeeded false: only the output's graph (a recomputed region).
    /// </summary>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, LayerKv? kv = null, bool valueNeeded = true)
    {
        using var scope = NewDisposeScope();
        var (h, hNormed) = Attend(new Residual(x), cos, sin, kv);
        return _feedForward.AddForward(h, hNormed, valueNeeded).MoveToOuterDisposeScope();
    }

    /// <summary>Single residual stream, the previous block's add still pending in x (B, T, D) -> this block's output, its add pending.</summary>
    public Residual Forward(Residual x, Tensor cos, Tensor sin, LayerKv? kv = null)
    {
        using var scope = NewDisposeScope();
        var (h, hNormed) = Attend(x, cos, sin, kv);
        return new Residual(h, _feedForward.forward(hNormed)).MoveToOuterDisposeScope();
    }

    /// <summary>MUDD streams q, k, v, r: each (B, T, D) -> (B, T, D), its add pending.</summary>
    public Residual Forward(Tensor q, Tensor k, Tensor v, Tensor r, Tensor cos, Tensor sin, LayerKv? kv = null)
    {
        using var scope = NewDisposeScope();
        var (h, hNormed) = Attend(q, k, v, r, cos, sin, kv);
        return new Residual(h, _feedForward.forward(hNormed)).MoveToOuterDisposeScope();
    }

    /// <summary>MUDD streams -> (B, T, D) with the output's add done inside the FFN's last GEMM; valueNeeded false: only its graph (a recomputed region).</summary>
    public Tensor ForwardSum(Tensor q, Tensor k, Tensor v, Tensor r, Tensor cos, Tensor sin, bool valueNeeded = true)
    {
        using var scope = NewDisposeScope();
        var (h, hNormed) = Attend(q, k, v, r, cos, sin, kv: null);
        return _feedForward.AddForward(h, hNormed, valueNeeded).MoveToOuterDisposeScope();
    }

    /// <summary>h = x + attn(attention_norm(x)) and ffn_norm(h); x's own pending add done with the norm.</summary>
    (Tensor H, Tensor HNormed) Attend(Residual x, Tensor cos, Tensor sin, LayerKv? kv)
    {
        var (sum, normed) = _attentionNorm!.Forward(x);   // the previous block's add, with this block's first norm
        return _ffnNorm.AddForward(sum, _attention.Forward(normed, normed, normed, cos, sin, kv));   // h = x + attn, ffn_norm(h)
    }

    /// <summary>h = r + attn(norms of q, k, v) and ffn_norm(h).</summary>
    (Tensor H, Tensor HNormed) Attend(Tensor q, Tensor k, Tensor v, Tensor r, Tensor cos, Tensor sin, LayerKv? kv)
    {
        var n = _attentionNorms is not null
            ? RmsNorm.Forward([.. _attentionNorms], [q, k, v])   // sepln: three norms as one kernel op
            : [_attentionNorm!.forward(q), _attentionNorm.forward(k), _attentionNorm.forward(v)];
        return _ffnNorm.AddForward(r, _attention.Forward(n[0], n[1], n[2], cos, sin, kv));   // h = r + attn, ffn_norm(h)
    }
}
