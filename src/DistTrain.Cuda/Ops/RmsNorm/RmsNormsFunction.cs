using System.Runtime.CompilerServices;
using DistTrain.Model.Layers;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace DistTrain.Cuda.Ops.RmsNorm;

/// <summary>
/// Several scaled RMSNorms of tensors of one shape (MUDDFormer's sepln norms of Q, K and V) as one custom autograd
/// function: one forward launch, one backward launch and one dw reduce for all of them (<see cref="FusedRmsNorm.ForwardSets"/>),
/// where separate norms take three of each. Keeps each x, weight and fp32 rstd, as <see cref="RmsNormFunction"/> does.
/// </summary>
internal sealed class RmsNormsFunction : MultiTensorFunction<RmsNormsFunction>
{
    public override string Name => nameof(RmsNormsFunction);

    /// <summary>xs (..., D) of one shape, one weight (D) each, as <see cref="FusedRmsNorm.SupportsSets"/> takes them -> each norm.</summary>
    public static Tensor[] Apply(FusedRmsNorm kernels, IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> weights, double eps)
    {
        bool graph = is_grad_enabled() && (xs.Any(x => x.requires_grad) || weights.Any(w => w.requires_grad));
        if (!graph)
        {
            var (ys, rstds) = kernels.ForwardSets(xs, weights, eps);
            foreach (var r in rstds) r.Dispose();
            return ys;
        }
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        var outputs = apply([kernels, eps, xs.Count, .. xs, .. weights]);
        // TorchSharp's node keeps an empty_like of each output and the forward's own handles: this scope frees them
        return outputs.Select(y => y.MoveToOuterDisposeScope()).ToArray();
    }

    /// <summary>vars: FusedRmsNorm, eps, n, x_0..x_{n-1}, weight_0..weight_{n-1}.</summary>
    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var (kernels, eps, n) = ((FusedRmsNorm)vars[0], (double)vars[1], (int)vars[2]);
        var xs = vars.Skip(3).Take(n).Cast<Tensor>().ToArray();
        var weights = vars.Skip(3 + n).Take(n).Cast<Tensor>().ToArray();
        var (ys, rstds) = kernels.ForwardSets(xs, weights, eps);
        ctx.save_data("kernels", kernels);
        ctx.save_data("n", n);
        ctx.save_data("weights", weights.Select(w => new StrongBox<Tensor>(w)).ToArray());   // the parameters themselves: backward adds into their .grad
        // saved as native SavedVariables when apply returns: these handles stay alive until then (the caller's scope frees them)
        ctx.save_for_backward([.. xs, .. rstds, .. weights]);
        return [.. ys];
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReturnedGradients.Release();
        var kernels = (FusedRmsNorm)ctx.get_data("kernels");
        int n = (int)ctx.get_data("n");
        var parameters = (StrongBox<Tensor>[])ctx.get_data("weights");
        var saved = ctx.get_saved_variables();
        Tensor[] dxs;
        Tensor?[] dws;
        using (var scope = NewDisposeScope())
        {
            var (xs, rstds, weights) = (saved.Take(n).ToArray(), saved.Skip(n).Take(n).ToArray(), saved.Skip(2 * n).Take(n).ToArray());
            // materialize_grads is on (the default): an unused output's gradient arrives as zeros
            var dys = gradOutputs.Select(g => g.is_contiguous() && TensorArgs.Aligned16(g) ? g : g.is_contiguous() ? g.clone() : g.contiguous()).ToArray();
            var intos = parameters.Select(p => WeightGrad.Into(p.Value)).ToArray();   // null: that dw goes back to autograd
            (dxs, dws) = kernels.BackwardSets(xs, weights, rstds, dys, intos);
            foreach (var t in intos) t?.Dispose();
            foreach (var t in dxs) t.MoveToOuterDisposeScope();
            foreach (var t in dws) t?.MoveToOuterDisposeScope();
        }
        foreach (var s in saved) s.Dispose();
        foreach (var g in gradOutputs) g?.Dispose();
        ReturnedGradients.Keep([.. dxs, .. dws]);
        return [null!, null!, null!, .. dxs, .. dws.Select(w => w!)];   // none for the kernels object, eps and n
    }
}
