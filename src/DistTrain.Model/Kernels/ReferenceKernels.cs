using DistTrain.Model.Layers;
using static TorchSharp.torch;

namespace DistTrain.Model.Kernels;

/// <summary>The operations as plain TorchSharp ops: runs on any device, and is the reference the fused kernels are tested against.</summary>
public sealed class ReferenceKernels : IKernels
{
    public static readonly ReferenceKernels Instance = new();

    ReferenceKernels() { }

    public string Name => "reference";

    public Tensor RmsNorm(Tensor x, Tensor? weight, double eps) =>
        weight is null ? Layers.RmsNorm.Normalize(x, eps) : Layers.RmsNorm.Normalize(x, eps) * weight;

    public Tensor[] RmsNorms(IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> weights, double eps) =>
        xs.Select((x, i) => RmsNorm(x, weights[i], eps)).ToArray();

    public (Tensor Sum, Tensor Normed) AddRmsNorm(Tensor a, Tensor b, Tensor? weight, double eps)
    {
        var sum = a.Plus(b);
        return (sum, RmsNorm(sum, weight, eps));
    }

    public Tensor SwiGlu(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return (nn.functional.silu(a) * b).MoveToOuterDisposeScope();
    }

    public Tensor QkNormRotary(Tensor x, Tensor? weight, double eps, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var normed = weight is null ? x : RmsNorm(x, weight, eps);
        return Rotary.Apply(normed, cos, sin).MoveToOuterDisposeScope();
    }

    public (Tensor Q, Tensor K) QkNormRotary(Tensor q, Tensor k, Tensor? qWeight, Tensor? kWeight, double eps, Tensor cos, Tensor sin) =>
        (QkNormRotary(q, qWeight, eps, cos, sin), QkNormRotary(k, kWeight, eps, cos, sin));

    public (Tensor Q, Tensor K, Tensor V) QkvRotary(IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> ws, int heads, Tensor? qWeight, Tensor? kWeight,
                                                    double eps, Tensor cos, Tensor sin) =>
        QkvRotaryOf(this, xs, ws, heads, qWeight, kWeight, eps, cos, sin);

    /// <summary><see cref="IKernels.QkvRotary"/> as three projections and <paramref name="kernels"/>' q/k norm-rotary pair.</summary>
    public static (Tensor Q, Tensor K, Tensor V) QkvRotaryOf(IKernels kernels, IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> ws, int heads,
                                                             Tensor? qWeight, Tensor? kWeight, double eps, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var p = xs.Select((x, i) => Projection.Apply(x, ws[i]).view(x.shape[0], x.shape[1], heads, -1)).ToArray();   // (B, T, H, d)
        var (q, k) = kernels.QkNormRotary(p[0], p[1], qWeight, kWeight, eps, cos, sin);
        return (q.MoveToOuterDisposeScope(), k.MoveToOuterDisposeScope(), p[2].MoveToOuterDisposeScope());
    }

    public Tensor[] Mix(IReadOnlyList<Tensor> hiddens, Tensor dw, Tensor? bias, HiddenGradients? gradients)
    {
        if (bias is null) return MixFunction.Apply(hiddens, dw, gradients);
        using var scope = NewDisposeScope();
        var w = dw.Plus(bias.view(bias.shape[0], 1, 1, bias.shape[1]));   // (C, B, T, L)
        return MixFunction.Apply(hiddens, w, gradients).Select(t => t.MoveToOuterDisposeScope()).ToArray();
    }

    public Tensor DepthWeightedAverage(IReadOnlyList<Tensor> hiddens, Tensor weights)
    {
        using var scope = NewDisposeScope();
        var acc = hiddens[0] * weights[0];
        for (int j = 1; j < hiddens.Count; j++)
            acc = acc.Plus(hiddens[j] * weights[j]);
        return acc.MoveToOuterDisposeScope();
    }

    public void CrossEntropyRows(Tensor logits, Tensor targets, Tensor losses, long? meanOver)
    {
        using var scope = NewDisposeScope();
        var p = Precision.Upcast(logits);                     // (c, V) fp32: the logits themselves when fp32 or fp64
        var t = targets.unsqueeze(1);                         // (c, 1)
        var lse = p.logsumexp(1, keepdim: true);              // (c, 1)
        losses.copy_((lse - p.gather(1, t)).squeeze(1));
        if (meanOver is not long n) return;
        p.sub_(lse).exp_().scatter_add_(1, t, full([t.shape[0], 1], Scalars.Of(-1.0), p.dtype, p.device)).div_(Scalars.Of(n));
        if (p.dtype != logits.dtype) logits.copy_(p);        // bf16: rounded once, as the unchunked backward casts it
    }

    public void ScaleGradient(Tensor y, Tensor x, Tensor scale, bool accumulate)
    {
        using var scope = NewDisposeScope();
        var scaled = Precision.Upcast(x).mul(scale);         // fp32 (fp64) math
        if (accumulate) scaled.PlusInPlace(y);
        y.copy_(scaled);                                      // rounded once to y's dtype
    }
}
