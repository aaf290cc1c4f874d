using System.Runtime.CompilerServices;
using DistTrain.Model;
using DistTrain.Model.Layers;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace DistTrain.Cuda.Ops.QkRotary;

/// <summary>
/// MUDDFormer's Q, K and V projections with the q/k norm-rotary pair as one custom autograd function. The three streams
/// (the sepln norms' outputs, back to back) and the three weights (back to back in the flat parameter buffer) are each one
/// (3, ·, ·) view, so each way is one batched GEMM where three cuBLAS calls ran (the weights' gradients: three split-K GEMMs
/// and their reduces). Backward writes dq and dk straight into the first two slabs of the batched gradient and copies dv
/// into the third; the weights' gradient goes into their .grad (back to back in the flat gradient buffer) with one copy.
/// The reference is three <see cref="Projection"/>s and <see cref="QkRotaryPairFunction"/>.
/// </summary>
internal sealed class QkvRotaryFunction : MultiTensorFunction<QkvRotaryFunction>
{
    public override string Name => nameof(QkvRotaryFunction);

    /// <summary>
    /// ts as one (n, ...) view when they lie back to back in memory (same shape, dtype and device, contiguous, each starting
    /// where the one before ends), else null. The view reads the first tensor's storage, which holds them all.
    /// </summary>
    internal static Tensor? BackToBack(IReadOnlyList<Tensor?> ts)
    {
        var t0 = ts[0];
        if (t0 is null || !t0.is_contiguous()) return null;
        long bytes = t0.numel() * t0.ElementSize;
        for (int i = 1; i < ts.Count; i++)
        {
            var t = ts[i];
            if (t is null || t.dtype != t0.dtype || t.device_type != t0.device_type || t.device_index != t0.device_index || !t.is_contiguous() ||
                !t.shape.SequenceEqual(t0.shape) || TensorMemory.Address(t) != TensorMemory.Address(t0) + i * bytes)
                return null;
        }
        long[] strides = [t0.numel(), .. t0.stride()];
        return t0.as_strided([ts.Count, .. t0.shape], strides, t0.storage_offset());
    }

    /// <summary>
    /// c + a·b for batches of matrices (a new tensor). TorchSharp 0.107 binds baddbmm with its operands rotated: Tensor.baddbmm(b, c)
    /// is c + this·b, and torch.baddbmm(input, batch1, batch2) passes input as the first factor (a test pins the order).
    /// </summary>
    internal static Tensor AddBatchedProduct(Tensor c, Tensor a, Tensor b) => a.baddbmm(b, c);

    /// <summary>xs (B, T, D) × 3 and ws (H·d, D) × 3, each back to back (<see cref="BackToBack"/>); the pair's weights and tables as <see cref="FusedQkRotary.SupportsPair"/> takes them.</summary>
    public static (Tensor Q, Tensor K, Tensor V) Apply(FusedQkRotary kernels, IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> ws, int heads,
                                                       Tensor? qWeight, Tensor? kWeight, double eps, Tensor cos, Tensor sin)
    {
        bool graph = is_grad_enabled() && (xs.Any(x => x.requires_grad) || ws.Any(w => w.requires_grad) || qWeight?.requires_grad == true || kWeight?.requires_grad == true);
        if (!graph)
        {
            var (yq, yk, v, q, k) = Run(kernels, xs, ws, heads, qWeight, kWeight, eps, cos, sin);
            q.Dispose(); k.Dispose();
            return (yq, yk, v);
        }
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        // the three inputs and weights are autograd's inputs (a view of the first would hand all gradients to it); the batched views are made inside
        var y = apply(kernels, xs[0], xs[1], xs[2], ws[0], ws[1], ws[2], heads, qWeight!, kWeight!, eps, cos, sin);
        // TorchSharp's node keeps an empty_like of each output and the forward's own handles: this scope frees them
        return (y[0].MoveToOuterDisposeScope(), y[1].MoveToOuterDisposeScope(), y[2].MoveToOuterDisposeScope());
    }

    /// <summary>Y3 = X3 · W3ᵀ (3, B·T, H·d) in one bmm; q and k (Y3's first two slabs as (B, T, H, d)) normed and rotated in one launch -> (yq, yk, v, q, k).</summary>
    static (Tensor Yq, Tensor Yk, Tensor V, Tensor Q, Tensor K) Run(FusedQkRotary kernels, IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> ws, int heads,
                                                                    Tensor? qWeight, Tensor? kWeight, double eps, Tensor cos, Tensor sin)
    {
        long b = xs[0].shape[0], t = xs[0].shape[1];
        using var x3 = BackToBack(xs) ?? throw new ArgumentException("qkv projections: the inputs do not lie back to back; FusesQkv should have refused them");
        using var w3 = BackToBack(ws) ?? throw new ArgumentException("qkv projections: the weights do not lie back to back; FusesQkv should have refused them");
        using var y3 = bmm(x3.flatten(1, 2), w3.transpose(1, 2));   // (3, B·T, H·d)
        var (q, k, v) = (y3[0].view(b, t, heads, -1), y3[1].view(b, t, heads, -1), y3[2].view(b, t, heads, -1));
        var (yq, yk) = kernels.ForwardPair(q, k, qWeight, kWeight, eps, cos, sin);
        return (yq, yk, v, q, k);
    }

    /// <summary>vars: FusedQkRotary, xq, xk, xv (B, T, D), wq, wk, wv (H·d, D) (the parameters), heads, q/k norm weights (or nulls), eps, cos, sin.</summary>
    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var kernels = (FusedQkRotary)vars[0];
        var xs = new[] { (Tensor)vars[1], (Tensor)vars[2], (Tensor)vars[3] };
        var ws = new[] { (Tensor)vars[4], (Tensor)vars[5], (Tensor)vars[6] };
        var (heads, qWeight, kWeight) = ((int)vars[7], vars[8] as Tensor, vars[9] as Tensor);
        var (eps, cos, sin) = ((double)vars[10], (Tensor)vars[11], (Tensor)vars[12]);
        var (yq, yk, v, q, k) = Run(kernels, xs, ws, heads, qWeight, kWeight, eps, cos, sin);
        ctx.save_data("kernels", kernels);
        ctx.save_data("eps", eps);
        ctx.save_data("normed", qWeight is not null);
        // the parameters themselves (boxed: TorchSharp warns for a tensor in save_data): backward adds into their .grad
        ctx.save_data("weights", ws.Select(w => new StrongBox<Tensor>(w)).ToArray());
        if (qWeight is not null) ctx.save_data("norms", new[] { new StrongBox<Tensor>(qWeight), new StrongBox<Tensor>(kWeight!) });
        // saved as native SavedVariables when apply returns (q and k: the pair's inputs, which its backward reads again)
        ctx.save_for_backward(qWeight is null ? [.. xs, .. ws, q, k, cos, sin] : [.. xs, .. ws, q, k, cos, sin, qWeight, kWeight!]);
        return [yq, yk, v];
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReturnedGradients.Release();
        var kernels = (FusedQkRotary)ctx.get_data("kernels");
        var saved = ctx.get_saved_variables();
        bool normed = (bool)ctx.get_data("normed");
        var grads = new Tensor?[12];   // one per var after the kernels object: xq, xk, xv, wq, wk, wv, heads, q/k norms, eps, cos, sin
        using (var scope = NewDisposeScope())
        {
            var (xs, ws) = (saved.Take(3).ToArray(), saved.Skip(3).Take(3).ToArray());
            var (q, k, cos, sin) = (saved[6], saved[7], saved[8], saved[9]);
            var (qWeight, kWeight) = normed ? (saved[10], saved[11]) : (null, null);
            var (gq, gk, gv) = (gradOutputs[0], gradOutputs[1], gradOutputs[2]);
            if (gq.stride(3) != 1) gq = gq.contiguous();   // a transposed gradient (strided over B, T, H) is read in place
            if (gk.stride(3) != 1) gk = gk.contiguous();
            // dY3: dq and dk written by the pair's backward into the first two slabs, dv copied into the third
            var dy3 = empty([3, .. q.shape], q.dtype, q.device);
            var norms = normed ? (StrongBox<Tensor>[])ctx.get_data("norms") : null;
            using var intoQ = WeightGrad.Into(norms?[0].Value);   // null: dw goes back to autograd
            using var intoK = WeightGrad.Into(norms?[1].Value);
            var (_, _, dwq, dwk) = kernels.BackwardPair(q, k, qWeight, kWeight, (double)ctx.get_data("eps"), cos, sin, gq, gk, intoQ, intoK, dy3[0], dy3[1]);
            dy3[2].copy_(gv);
            var dyRows = dy3.view(3, q.shape[0] * q.shape[1], -1);           // (3, B·T, H·d)
            using var x3 = BackToBack(xs)!;                                  // the saved inputs: the same storage as in forward
            using var w3 = BackToBack(ws)!;
            var dx3 = bmm(dyRows, w3).view(x3.shape);                        // (3, B, T, D)
            var into = ((StrongBox<Tensor>[])ctx.get_data("weights")).Select(p => WeightGrad.Into(p.Value)).ToArray();
            using var g3 = BackToBack(into);
            var xRows = x3.flatten(1, 2);                                    // (3, B·T, D)
            if (g3 is not null)
                g3.copy_(AddBatchedProduct(g3, dyRows.transpose(1, 2), xRows));   // the three weights' gradients in one batched GEMM, into their .grad
            else
            {
                var dw3 = bmm(dyRows.transpose(1, 2), xRows);               // (3, H·d, D), for autograd
                (grads[3], grads[4], grads[5]) = (dw3[0], dw3[1], dw3[2]);
            }
            foreach (var t in into) t?.Dispose();
            (grads[0], grads[1], grads[2]) = (dx3[0], dx3[1], dx3[2]);
            (grads[7], grads[8]) = (dwq, dwk);
            foreach (var g in grads) g?.MoveToOuterDisposeScope();
        }
        foreach (var s in saved) s.Dispose();
        foreach (var g in gradOutputs) g?.Dispose();
        ReturnedGradients.Keep([.. grads]);
        return [null!, .. grads.Select(g => g!)];   // none for the kernels object, heads, eps and the tables
    }
}
