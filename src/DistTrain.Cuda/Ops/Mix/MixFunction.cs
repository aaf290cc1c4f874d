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
/// buffers are read and written once per two mixes. With scales, the first streams come out RMS-normed
/// (<see cref="IKernels.MixNorm"/>): forward also keeps those streams before their norms and their rstd,
/// backward runs the norms' backward in the same pass and adds their scales' gradients into the scales'
/// .grad. Without a graph it is one forward launch and no autograd node.
/// </summary>
internal sealed class FusedMixFunction : MultiTensorFunction<FusedMixFunction>
{
    public override string Name => nameof(FusedMixFunction);

    /// <summary>
    /// hiddens h_0..h_{L-1} (B, T, D), dw (C, B, T, L) -> C streams (B, T, D) in the hiddens' dtype; with
    /// <paramref name="scales"/> the first scales.Count of them RMS-normed (eps <paramref name="eps"/>) and scaled.
    /// </summary>
    public static Tensor[] Apply(FusedMix kernels, IReadOnlyList<Tensor> hiddens, Tensor dw, HiddenGradients? gradients,
                                 IReadOnlyList<Tensor>? scales = null, double eps = 0)
    {
        var norms = scales is null ? null : new StreamNorms(scales, eps);
        bool graph = is_grad_enabled() && (dw.requires_grad || hiddens.Any(h => h.requires_grad) || scales?.Any(s => s.requires_grad) == true);
        if (!graph)
        {
            using var w = dw.to(hiddens[0].dtype).contiguous();
            return kernels.Forward(hiddens, w, norms).Streams;
        }
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        var streams = apply([kernels, gradients!, norms!, dw, .. scales ?? [], .. hiddens]);
        // TorchSharp's node keeps an empty_like of each output and the forward's own handles: this scope frees them
        return streams.Select(t => t.MoveToOuterDisposeScope()).ToArray();
    }

    /// <summary>vars: FusedMix, HiddenGradients (or null), StreamNorms (or null), dw (C, B, T, L), the norms' scales, h_0..h_{L-1} (B, T, D).</summary>
    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var (kernels, gradients, norms, dw) = ((FusedMix)vars[0], vars[1] as HiddenGradients, vars[2] as StreamNorms, (Tensor)vars[3]);
        int nn = norms?.Scales.Count ?? 0;
        var hiddens = vars.Skip(4 + nn).Cast<Tensor>().ToList();
        var w = dw.to(hiddens[0].dtype).contiguous();   // (C, B, T, L): a small copy (dw arrives as a permuted view)
        ctx.save_data("kernels", kernels);
        ctx.save_data("gradients", gradients!);
        ctx.save_data("dwType", dw.dtype);
        ctx.save_data("inputs", hiddens.Count);
        ctx.save_data("norms", new StrongBox<StreamNorms?>(norms));   // the scale parameters themselves: backward adds their gradients into their .grad
        var (streams, raw, rstd) = kernels.Forward(hiddens, w, norms, keep: true);
        // saved as native SavedVariables when apply returns: these handles stay alive until then (the caller's scope frees them)
        ctx.save_for_backward([w, .. hiddens, .. raw, .. (rstd is null ? Array.Empty<Tensor>() : [rstd])]);
        return [.. streams];
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReturnedGradients.Release();
        var kernels = (FusedMix)ctx.get_data("kernels");
        var gradients = ctx.get_data("gradients") as HiddenGradients;
        var dwType = (ScalarType)ctx.get_data("dwType");
        int l = (int)ctx.get_data("inputs");
        var norms = ((StrongBox<StreamNorms?>)ctx.get_data("norms")).Value;
        int nn = norms?.Scales.Count ?? 0;
        var saved = ctx.get_saved_variables();
        var grads = new List<Tensor?>();
        var scaleGrads = new Tensor?[nn];
        using (var scope = NewDisposeScope())
        {
            var (w, hiddens) = (saved[0], saved.Skip(1).Take(l).ToList());
            var raw = saved.Skip(1 + l).Take(nn).ToList();
            // the kernel reads whole rows: a missing, strided or misaligned stream gradient becomes a fresh tensor
            var streamGrads = gradOutputs.Select(g => g is null ? zeros_like(hiddens[0])
                : g.is_contiguous() && TensorArgs.Aligned16(g) ? g : g.is_contiguous() ? g.clone() : g.contiguous()).ToList();
            // Every other mix defers its parts for h_0..h_{l-2} to the next mix in backward (over l − 1 hiddens),
            // which adds both mixes' parts in one pass over those buffers: writes only h_{l-1}, which it hands over.
            using var deferred = gradients?.TakeDeferred(l);
            bool defer = gradients is not null && deferred is null && l > 2;
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
            // a deferring mix hands on its normed streams' input gradients (the kernel writes them), not their output gradients
            var normInputGrads = defer && nn > 0 ? Enumerable.Range(0, nn).Select(_ => empty_like(hiddens[0])).ToArray() : null;
            var normBackward = nn == 0 ? null : new NormBackward(raw, norms!.Scales, saved[1 + l + nn], normInputGrads);
            var (gw, partials) = kernels.Backward(hiddens, w, streamGrads, targets, addMask, writeMask,
                deferred is null ? null : (deferred.StreamGrads, deferred.Weights), normBackward);
            if (defer)   // new handles: the ones here are disposed below and by this scope
                gradients!.Defer(new DeferredMix(l, [.. streamGrads.Select((g, i) => (i < nn ? normInputGrads![i] : g).detach())], w.detach()));
            for (int i = 0; i < nn; i++)
            {
                if (norms!.Scales[i] is not { } scale) continue;
                using var into = WeightGrad.Into(scale);   // null: the gradient goes back to autograd
                scaleGrads[i] = kernels.ReduceScaleGrad(partials!, i, scale, into)?.MoveToOuterDisposeScope();
            }
            grads.Add(gw.dtype == dwType ? gw : gw.to(dwType));
            // null: kept in the buffer, or not yet added (deferred); autograd gets h_j's gradient from the mix that hands it over
            for (int j = 0; j < l; j++)
                grads.Add(targets[j] is not { } t ? null : gradients is null ? t : gradients.Settle(j, l, t));
            foreach (var g in grads) g?.MoveToOuterDisposeScope();
        }
        foreach (var s in saved) s.Dispose();
        foreach (var g in gradOutputs) g?.Dispose();
        ReturnedGradients.Keep([.. grads, .. scaleGrads]);
        // no gradients for the kernels, HiddenGradients and StreamNorms objects; null for a scale whose .grad took it
        return [null!, null!, null!, grads[0]!, .. scaleGrads.Select(g => g!), .. grads.Skip(1).Select(g => g!)];
    }
}
