using System.Runtime.CompilerServices;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace DistTrain.Model.Layers;

/// <summary>
/// A block's output h + s·wᵀ (the FFN's last projection with the residual add) as one autograd node, computed as one
/// GEMM that adds h in its epilogue (addmm, beta = 1: no separate add, one rounding). Where a recomputed region's
/// output is needed only for its graph (<see cref="Recompute"/>'s re-run in backward), <c>valueNeeded</c> false leaves
/// it unwritten: backward needs s and w, never the product, so the re-run skips the FFN's last GEMM and the add.
/// Backward: dh = g, ds = g·w, and dw = gᵀ·s into w's .grad where it has one (<see cref="Projection.WeightGradient"/>).
/// </summary>
public sealed class ProjectedResidual : MultiTensorFunction<ProjectedResidual>
{
    public override string Name => nameof(ProjectedResidual);

    /// <summary>h (..., D), s (..., H), weight (D, H) (the parameter itself: backward finds its .grad) -> h + s·weightᵀ (..., D).</summary>
    public static Tensor Apply(Tensor h, Tensor s, Tensor weight, bool valueNeeded = true)
    {
        bool graph = is_grad_enabled() && (h.requires_grad || s.requires_grad || weight.requires_grad);
        if (!graph) return Compute(h, s, weight);
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        var y = apply(h, s, weight, valueNeeded)[0];
        // TorchSharp's node keeps an empty_like of each output and the forward's own handles: this scope frees them
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>(N, D) + (N, H)·(H, D) in one GEMM, viewed as h.</summary>
    static Tensor Compute(Tensor h, Tensor s, Tensor weight) =>
        h.reshape(-1, h.shape[^1]).addmm(s.reshape(-1, s.shape[^1]), weight.t()).view(h.shape);

    /// <summary>vars: h, s, weight, whether the output's values are needed.</summary>
    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var (h, s, w, valueNeeded) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (bool)vars[3]);
        ctx.save_data("weight", new StrongBox<Tensor>(w));   // the parameter itself (boxed: TorchSharp warns for a tensor in save_data): backward adds dw into its .grad
        ctx.save_data("dh", h.requires_grad);
        ctx.save_data("ds", s.requires_grad);
        ctx.save_data("dw", w.requires_grad);
        // saved as native SavedVariables when apply returns: these handles stay alive until then (the caller's scope frees them)
        ctx.save_for_backward([s, w]);
        return [valueNeeded ? Compute(h, s, w) : empty_like(h)];
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReturnedGradients.Release();
        var saved = ctx.get_saved_variables();
        var g = gradOutputs[0];
        Tensor? dh = (bool)ctx.get_data("dh") ? g : null, ds = null, dw = null;
        using (var scope = NewDisposeScope())
        {
            var (s, w) = (saved[0], saved[1]);
            var rows = g.reshape(-1, w.shape[0]);   // (N, D)
            if ((bool)ctx.get_data("ds")) ds = rows.mm(w).view(s.shape).MoveToOuterDisposeScope();
            if ((bool)ctx.get_data("dw"))
                dw = Projection.WeightGradient(rows, s.reshape(-1, s.shape[^1]), ((StrongBox<Tensor>)ctx.get_data("weight")).Value!);
        }
        foreach (var t in saved) t.Dispose();
        if (dh is null) g.Dispose();   // else handed back to autograd as h's gradient
        ReturnedGradients.Keep([dh, ds, dw]);
        return [dh!, ds!, dw!, null!];   // none for the flag
    }
}
