using DistTrain.Model.Layers;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace DistTrain.Cuda.Ops.SwiGlu;

/// <summary>
/// The fused SwiGLU gate as a custom autograd function: forward keeps a and b, backward runs the
/// one backward kernel. Without a graph it is one forward launch and no autograd node.
/// </summary>
internal sealed class SwiGluFunction : MultiTensorFunction<SwiGluFunction>
{
    public override string Name => nameof(SwiGluFunction);

    /// <summary>a, b (..., H) -> silu(a)·b (..., H) in a's dtype.</summary>
    public static Tensor Apply(FusedSwiGlu kernels, Tensor a, Tensor b)
    {
        bool graph = is_grad_enabled() && (a.requires_grad || b.requires_grad);
        if (!graph)
        {
            using var ac = a.contiguous();
            using var bc = b.contiguous();
            return kernels.Forward(ac, bc);
        }
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        var y = apply(kernels, a, b)[0];
        // TorchSharp's node keeps an empty_like of each output and the forward's own handles: this scope frees them
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>vars: FusedSwiGlu, a, b.</summary>
    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var (kernels, a, b) = ((FusedSwiGlu)vars[0], ((Tensor)vars[1]).contiguous(), ((Tensor)vars[2]).contiguous());
        var y = kernels.Forward(a, b);
        ctx.save_data("kernels", kernels);
        // saved as native SavedVariables when apply returns: these handles stay alive until then (the caller's scope frees them)
        ctx.save_for_backward([a, b]);
        return [y];
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReturnedGradients.Release();
        var kernels = (FusedSwiGlu)ctx.get_data("kernels");
        var saved = ctx.get_saved_variables();
        Tensor da, db;
        using (var scope = NewDisposeScope())
        {
            var dy = gradOutputs[0].contiguous();
            (da, db) = kernels.Backward(saved[0], saved[1], dy);
            da.MoveToOuterDisposeScope();
            db.MoveToOuterDisposeScope();
        }
        foreach (var s in saved) s.Dispose();
        foreach (var g in gradOutputs) g?.Dispose();
        ReturnedGradients.Keep([da, db]);
        return [null!, da, db];   // no gradient for the kernels object
    }
}
