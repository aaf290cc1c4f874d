using System.Runtime.CompilerServices;
using DistTrain.Model.Kernels;
using DistTrain.Model.Layers;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace DistTrain.Cuda.Ops.Mix;

/// <summary>
/// The fused mixing as a custom autograd function: forward keeps the weights (converted to the
/// hiddens' dtype, as the reference multiplies) and the hiddens (alive anyway); backward writes each
/// hidden's gradient straight into its <see cref="HiddenGradients"/> buffer (added in place where the
/// buffer exists) and hands autograd only the buffers this mix is the last reader of. Every other mix
/// defers its parts for the earlier hiddens to the next one (<see cref="HiddenGradients.Defer"/>): the
/// buffers are read and written once per two mixes. A bias shared by every token (MUDDFormer's dense_bs, DenseFormer's α)
/// is added by the kernels as they read the weights; its gradient, a sum of the weights' gradient over the tokens, goes
/// into its .grad where it has one (one launch, which also converts the weights' gradient to their dtype). Without a
/// graph it is one forward launch and no autograd node.
/// </summary>
internal sealed class FusedMixFunction : MultiTensorFunction<FusedMixFunction>
{
    public override string Name => nameof(FusedMixFunction);

    /// <summary>
    /// hiddens h_0..h_{L-1} (B, T, D), dw (C, B, T, L) and/or bias (C, L) (or (L) for one stream; the parameter itself:
    /// backward finds its .grad) -> C streams (B, T, D) in the hiddens' dtype.
    /// </summary>
    public static Tensor[] Apply(FusedMix kernels, IReadOnlyList<Tensor> hiddens, Tensor? dw, Tensor? bias, HiddenGradients? gradients)
    {
        bool graph = is_grad_enabled() && (dw is { requires_grad: true } || bias is { requires_grad: true } || hiddens.Any(h => h.requires_grad));
        if (!graph)
        {
            using var w = dw is null ? null : Weights(dw, hiddens[0].dtype);
            using var b = bias is null ? null : Bias(bias, hiddens[0].dtype);
            return kernels.Forward(hiddens, w, b);
        }
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        var streams = apply([kernels, gradients!, dw!, bias!, .. hiddens]);
        // TorchSharp's node keeps an empty_like of each output and the forward's own handles: this scope frees them
        return streams.Select(t => t.MoveToOuterDisposeScope()).ToArray();
    }

    /// <summary>dw in the hiddens' dtype, as a view the kernels read in place where its strides allow (else a contiguous copy: n values a token).</summary>
    static Tensor Weights(Tensor dw, ScalarType dtype)
    {
        var w = dw.to(dtype);   // dw itself (a new handle) when of that dtype
        if (FusedMix.TokenStrides(w) is not null) return w;
        var copy = w.contiguous();
        w.Dispose();
        return copy;
    }

    /// <summary>The bias as the kernels read it: contiguous C·L values in the hiddens' dtype (the parameter itself, a new handle, when it is so).</summary>
    static Tensor Bias(Tensor bias, ScalarType dtype)
    {
        var b = bias.to(dtype);
        if (b.is_contiguous()) return b;
        var copy = b.contiguous();
        b.Dispose();
        return copy;
    }

    /// <summary>vars: FusedMix, HiddenGradients (or null), dw (C, B, T, L) or null, bias (C, L) or (L) or null, h_0..h_{L-1} (B, T, D).</summary>
    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var (kernels, gradients, dw, bias) = ((FusedMix)vars[0], vars[1] as HiddenGradients, vars[2] as Tensor, vars[3] as Tensor);
        var hiddens = vars.Skip(4).Cast<Tensor>().ToList();
        var w = dw is null ? null : Weights(dw, hiddens[0].dtype);   // (C, B, T, L): MUDDFormer's permuted view is read in place
        var b = bias is null ? null : Bias(bias, hiddens[0].dtype);
        ctx.save_data("kernels", kernels);
        ctx.save_data("gradients", gradients!);
        ctx.save_data("dwType", dw?.dtype ?? hiddens[0].dtype);
        ctx.save_data("weights", w is not null);
        ctx.save_data("bias", new StrongBox<Tensor?>(bias));   // the parameter itself (boxed: TorchSharp warns for a tensor in save_data): backward adds into its .grad
        // saved as native SavedVariables when apply returns: these handles stay alive until then (the caller's scope frees them)
        ctx.save_for_backward([.. w is null ? Array.Empty<Tensor>() : [w], .. b is null ? Array.Empty<Tensor>() : [b], .. hiddens]);
        return [.. kernels.Forward(hiddens, w, b)];
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReturnedGradients.Release();
        var kernels = (FusedMix)ctx.get_data("kernels");
        var gradients = ctx.get_data("gradients") as HiddenGradients;
        var dwType = (ScalarType)ctx.get_data("dwType");
        var bias = ((StrongBox<Tensor?>)ctx.get_data("bias")).Value;
        var saved = ctx.get_saved_variables();
        var grads = new List<Tensor?>();
        using (var scope = NewDisposeScope())
        {
            int at = 0;
            var w = (bool)ctx.get_data("weights") ? saved[at++] : null;
            var b = bias is not null ? saved[at++] : null;
            var hiddens = saved.Skip(at).ToList();
            int l = hiddens.Count;
            // the kernel reads whole rows: a missing, strided or misaligned stream gradient becomes a fresh tensor
            var streamGrads = gradOutputs.Select(g => g is null ? zeros_like(hiddens[0])
                : g.is_contiguous() && TensorArgs.Aligned16(g) ? g : g.is_contiguous() ? g.clone() : g.contiguous()).ToList();
            // Every other mix defers its parts for h_0..h_{l-2} to the next mix in backward (over l − 1 hiddens),
            // which adds both mixes' parts in one pass over those buffers: writes only h_{l-1}, which it hands over.
            using var deferred = gradients?.TakeDeferred(l);
            bool defer = gradients is not null && deferred is null && l > 2 && w is not null;
            ulong writeMask = defer ? 1UL << (l - 1) : l == 64 ? ulong.MaxValue : (1UL << l) - 1;
            var targets = new Tensor?[l];
            ulong addMask = 0;
            for (int j = 0; j < l; j++)
            {
                if ((writeMask >> j & 1) == 0) continue;
                var buffer = gradients?.Take(j);
                if (buffer is not null) addMask |= 1UL << j;
                targets[j] = buffer ?? empty_like(hiddens[j]);
            }
            var gw = kernels.Backward(hiddens, w, b, streamGrads, targets, addMask, writeMask,
                deferred is null ? null : (deferred.StreamGrads, deferred.Weights, deferred.Bias));
            if (defer)   // new handles: the ones here are disposed below and by this scope
                gradients!.Defer(new DeferredMix(l, [.. streamGrads.Select(g => g.detach())], w!.detach(), b?.detach()));
            var (dwGrad, biasGrad) = b is null ? (gw.dtype == dwType ? gw : gw.to(dwType), null) : BiasGradients(kernels, gw, w is null ? null : dwType, bias!, b.dtype);
            grads.Add(dwGrad);
            grads.Add(biasGrad);
            // null: kept in the buffer, or not yet added (deferred); autograd gets h_j's gradient from the mix that hands it over
            for (int j = 0; j < l; j++)
                grads.Add(targets[j] is not { } t ? null : gradients is null ? t : gradients.Settle(j, l, t));
            foreach (var g in grads) g?.MoveToOuterDisposeScope();
        }
        foreach (var s in saved) s.Dispose();
        foreach (var g in gradOutputs) g?.Dispose();
        ReturnedGradients.Keep(grads);
        return [null!, null!, .. grads.Select(g => g!)];   // no gradients for the kernels and the HiddenGradients objects
    }

    /// <summary>
    /// gw (C, B, T, L) fp32 -> the weights' gradient in <paramref name="dwType"/> (null: there are no per-token weights) and
    /// the bias's, summed over the tokens by one kernel: into the bias's .grad where it has one in the kernels' dtype (null
    /// returned: nothing goes back to autograd), else a new tensor.
    /// </summary>
    static (Tensor? Dw, Tensor? Bias) BiasGradients(FusedMix kernels, Tensor gw, ScalarType? dwType, Tensor bias, ScalarType dtype)
    {
        using var into = WeightGrad.Into(bias);
        var target = into is not null && into.dtype == dtype ? into : empty(bias.shape, dtype, gw.device);
        // the weights' gradient in the hiddens' dtype, written in the same pass (gw's layout); fp32 needs no copy
        var copy = dwType == dtype && dtype != ScalarType.Float32 ? empty_strided(gw.shape, gw.stride(), dtype, device: gw.device) : null;
        kernels.BiasGradient(gw, copy, target, accumulate: ReferenceEquals(target, into));
        Tensor? dw = dwType is not { } t ? null : copy ?? (gw.dtype == t ? gw : gw.to(t));
        return (dw, ReferenceEquals(target, into) ? null : target);
    }
}
