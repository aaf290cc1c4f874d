using System.Runtime.CompilerServices;
using DistTrain.Model.Layers;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace DistTrain.Cuda.Ops.QkRotary;

/// <summary>
/// QK-norm with rotary for q and k of one layer as one custom autograd function: one forward launch, one backward
/// launch and one dw reduce for both (<see cref="FusedQkRotary.ForwardPair"/>), where <see cref="QkRotaryFunction"/>
/// takes two of each. Keeps q and k (the views themselves), the weights and the tables.
/// </summary>
internal sealed class QkRotaryPairFunction : MultiTensorFunction<QkRotaryPairFunction>
{
    public override string Name => nameof(QkRotaryPairFunction);

    /// <summary>q, k (B, T, H, d), their weights (both or neither), cos and sin, as <see cref="FusedQkRotary.SupportsPair"/> takes them.</summary>
    public static (Tensor Q, Tensor K) Apply(FusedQkRotary kernels, Tensor q, Tensor k, Tensor? wq, Tensor? wk, double eps, Tensor cos, Tensor sin)
    {
        bool graph = is_grad_enabled() && (q.requires_grad || k.requires_grad || wq?.requires_grad == true || wk?.requires_grad == true);
        if (!graph)
            return kernels.ForwardPair(q, k, wq, wk, eps, cos, sin);
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        var y = apply(kernels, q, k, wq!, wk!, eps, cos, sin);
        // TorchSharp's node keeps an empty_like of each output and the forward's own handles: this scope frees them
        return (y[0].MoveToOuterDisposeScope(), y[1].MoveToOuterDisposeScope());
    }

    /// <summary>vars: FusedQkRotary, q, k, q's weight, k's weight (or nulls), eps, cos, sin.</summary>
    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var (kernels, q, k, wq, wk) = ((FusedQkRotary)vars[0], (Tensor)vars[1], (Tensor)vars[2], vars[3] as Tensor, vars[4] as Tensor);
        var (eps, cos, sin) = ((double)vars[5], (Tensor)vars[6], (Tensor)vars[7]);
        var (yq, yk) = kernels.ForwardPair(q, k, wq, wk, eps, cos, sin);
        ctx.save_data("kernels", kernels);
        ctx.save_data("eps", eps);
        ctx.save_data("weighted", wq is not null);
        // the parameters themselves (boxed: TorchSharp prints a warning for a tensor in save_data): backward adds dw into their .grad
        if (wq is not null) ctx.save_data("weights", new[] { new StrongBox<Tensor>(wq), new StrongBox<Tensor>(wk!) });
        // saved as native SavedVariables when apply returns (the views' strides are kept: backward reads the same views)
        ctx.save_for_backward(wq is null ? [q, k, cos, sin] : [q, k, cos, sin, wq, wk!]);
        return [yq, yk];
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReturnedGradients.Release();
        var kernels = (FusedQkRotary)ctx.get_data("kernels");
        var saved = ctx.get_saved_variables();
        bool weighted = (bool)ctx.get_data("weighted");
        Tensor dq, dk;
        Tensor? dwq, dwk;
        using (var scope = NewDisposeScope())
        {
            var (q, k, cos, sin) = (saved[0], saved[1], saved[2], saved[3]);
            var (wq, wk) = weighted ? (saved[4], saved[5]) : (null, null);
            // materialize_grads is on (the default): an unused output's gradient arrives as zeros
            var (gq, gk) = (gradOutputs[0], gradOutputs[1]);
            if (gq.stride(3) != 1) gq = gq.contiguous();   // a transposed gradient (strided over B, T, H) is read in place
            if (gk.stride(3) != 1) gk = gk.contiguous();
            var parameters = weighted ? (StrongBox<Tensor>[])ctx.get_data("weights") : null;
            using var intoQ = WeightGrad.Into(parameters?[0].Value);   // null: dw goes back to autograd
            using var intoK = WeightGrad.Into(parameters?[1].Value);
            (dq, dk, dwq, dwk) = kernels.BackwardPair(q, k, wq, wk, (double)ctx.get_data("eps"), cos, sin, gq, gk, intoQ, intoK);
            foreach (var t in new[] { dq, dk, dwq, dwk }) t?.MoveToOuterDisposeScope();
        }
        foreach (var s in saved) s.Dispose();
        foreach (var g in gradOutputs) g?.Dispose();
        ReturnedGradients.Keep([dq, dk, dwq, dwk]);
        return [null!, dq, dk, dwq!, dwk!, null!, null!, null!];   // none for the kernels object, eps and the tables
    }
}
