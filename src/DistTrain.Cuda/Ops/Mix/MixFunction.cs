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
/// buffers are read and written once per two mixes. Without a graph it is one forward launch and no autograd node.
/// With norm weights (sepln) the first N streams come out normed (<see cref="IKernels.MixNormed"/>): forward also
/// keeps their raw values and rstd (what their separate norms kept), backward adds the norm weights' gradients into
/// their .grad (or returns them), and a deferring mix hands on its streams' pre-norm gradients, which its kernel writes.
/// </summary>
internal sealed class FusedMixFunction : MultiTensorFunction<FusedMixFunction>
{
    public override string Name => nameof(FusedMixFunction);

    /// <summary>
    /// hiddens h_0..h_{L-1} (B, T, D), dw (C, B, T, L) -> C streams (B, T, D) in the hiddens' dtype; with
    /// <paramref name="normWeights"/> (N ≤ 3, each (D)) the first N of them RMS-normed (eps) and scaled.
    /// </summary>
    public static Tensor[] Apply(FusedMix kernels, IReadOnlyList<Tensor> hiddens, Tensor dw, HiddenGradients? gradients,
                                 IReadOnlyList<Tensor>? normWeights = null, double eps = 0)
    {
        var norms = normWeights ?? [];
        bool graph = is_grad_enabled() && (dw.requires_grad || hiddens.Any(h => h.requires_grad) || norms.Any(w => w.requires_grad));
        if (!graph)
        {
            using var scope0 = NewDisposeScope();
            using var w = dw.to(hiddens[0].dtype).contiguous();
            if (normWeights is null) return kernels.Forward(hiddens, w).Select(t => t.MoveToOuterDisposeScope()).ToArray();
            var (streams0, normed0, _) = kernels.ForwardNormed(hiddens, w, normWeights, eps);
            return [.. normed0.Select(t => t.MoveToOuterDisposeScope()), .. streams0.Skip(norms.Count).Select(t => t.MoveToOuterDisposeScope())];
        }
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        var streams = apply([kernels, gradients!, normWeights is null ? null! : eps, norms.Count, dw, .. norms, .. hiddens]);
        // TorchSharp's node keeps an empty_like of each output and the forward's own handles: this scope frees them
        return streams.Select(t => t.MoveToOuterDisposeScope()).ToArray();
    }

    /// <summary>vars: FusedMix, HiddenGradients (or null), eps (or null: no norms), N, dw (C, B, T, L), N norm weights (D), h_0..h_{L-1} (B, T, D).</summary>
    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var (kernels, gradients, nn, dw) = ((FusedMix)vars[0], vars[1] as HiddenGradients, (int)vars[3], (Tensor)vars[4]);
        var norms = vars.Skip(5).Take(nn).Cast<Tensor>().ToList();
        var hiddens = vars.Skip(5 + nn).Cast<Tensor>().ToList();
        var w = dw.to(hiddens[0].dtype).contiguous();   // (C, B, T, L): a small copy (dw arrives as a permuted view)
        ctx.save_data("kernels", kernels);
        ctx.save_data("gradients", gradients!);
        ctx.save_data("dwType", dw.dtype);
        ctx.save_data("normed", nn);
        if (nn == 0)
        {
            // saved as native SavedVariables when apply returns: these handles stay alive until then (the caller's scope frees them)
            ctx.save_for_backward([w, .. hiddens]);
            return [.. kernels.Forward(hiddens, w)];
        }
        var (streams, normed, rstd) = kernels.ForwardNormed(hiddens, w, norms, (double)vars[2]);
        // the parameters themselves (boxed: TorchSharp prints a warning for a tensor in save_data): backward adds their gradients into .grad
        ctx.save_data("normWeights", norms.Select(p => new StrongBox<Tensor>(p)).ToArray());
        ctx.save_for_backward([w, rstd, .. streams.Take(nn), .. norms, .. hiddens]);
        return [.. normed, .. streams.Skip(nn)];
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReturnedGradients.Release();
        var kernels = (FusedMix)ctx.get_data("kernels");
        var gradients = ctx.get_data("gradients") as HiddenGradients;
        var dwType = (ScalarType)ctx.get_data("dwType");
        int nn = (int)ctx.get_data("normed");
        var saved = ctx.get_saved_variables();
        var grads = new List<Tensor?>();
        var dnw = new Tensor?[nn];
        using (var scope = NewDisposeScope())
        {
            // saved: w, then (normed) rstd, the N raw streams, the N norm weights; then the hiddens
            var w = saved[0];
            Tensor? rstd = nn == 0 ? null : saved[1];
            var (raw, norms) = (saved.Skip(2).Take(nn).ToList(), saved.Skip(2 + nn).Take(nn).ToList());
            var hiddens = saved.Skip(nn == 0 ? 1 : 2 + 2 * nn).ToList();
            int l = hiddens.Count;
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
            var pending = deferred is null ? ((IReadOnlyList<Tensor>, Tensor)?)null : (deferred.StreamGrads, deferred.Weights);
            Tensor gw;
            // a deferring normed mix hands on its streams' pre-norm gradients: its kernel writes them (the normed ones' are of no use to the next mix)
            var handedOn = defer && nn > 0 ? Enumerable.Range(0, nn).Select(i => empty_like(hiddens[0])).ToList() : null;
            if (nn == 0)
                gw = kernels.Backward(hiddens, w, streamGrads, targets, addMask, writeMask, pending);
            else
            {
                var boxes = (StrongBox<Tensor>[])ctx.get_data("normWeights");
                var into = boxes.Select(b => WeightGrad.Into(b.Value)).ToArray();   // null: the weight's gradient goes back to autograd
                try
                {
                    (gw, var dn) = kernels.BackwardNormed(hiddens, w, streamGrads, targets, addMask, writeMask, pending,
                        new FusedMix.NormBackward(raw, rstd!, norms, into, handedOn));
                    for (int i = 0; i < nn; i++) dnw[i] = dn[i];
                }
                finally
                {
                    foreach (var t in into) t?.Dispose();
                }
            }
            if (defer)   // new handles: the ones here are disposed below and by this scope
                gradients!.Defer(new DeferredMix(l, [.. (handedOn ?? []).Concat(streamGrads.Skip(handedOn?.Count ?? 0)).Select(g => g.detach())], w.detach()));
            grads.Add(gw.dtype == dwType ? gw : gw.to(dwType));
            grads.AddRange(dnw);
            // null: kept in the buffer, or not yet added (deferred); autograd gets h_j's gradient from the mix that hands it over
            for (int j = 0; j < l; j++)
                grads.Add(targets[j] is not { } t ? null : gradients is null ? t : gradients.Settle(j, l, t));
            foreach (var g in grads) g?.MoveToOuterDisposeScope();
        }
        foreach (var s in saved) s.Dispose();
        foreach (var g in gradOutputs) g?.Dispose();
        ReturnedGradients.Keep(grads);
        // no gradients for the kernels and HiddenGradients objects, eps and N
        return [null!, null!, null!, null!, .. grads.Select(g => g!)];
    }
}
