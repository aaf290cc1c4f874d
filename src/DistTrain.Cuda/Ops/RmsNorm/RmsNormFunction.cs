using System.Runtime.CompilerServices;
using DistTrain.Model.Layers;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace DistTrain.Cuda.Ops.RmsNorm;

/// <summary>
/// The fused RMSNorm as a custom autograd function: forward keeps x, the weight and the fp32
/// rstd (rows floats) and backward runs the backward kernels. Without a graph (no_grad, or nothing
/// requires grad) it is one forward launch and no autograd node.
/// </summary>
internal sealed class RmsNormFunction : MultiTensorFunction<RmsNormFunction>
{
    public override string Name => nameof(RmsNormFunction);

    /// <summary>x (..., D), weight (D) or null -> (..., D) in x's dtype.</summary>
    public static Tensor Apply(FusedRmsNorm kernels, Tensor x, Tensor? weight, double eps)
    {
        bool graph = is_grad_enabled() && (x.requires_grad || weight?.requires_grad == true);
        if (!graph)
        {
            using var input = x.contiguous();
            return kernels.Forward(input, weight, eps, keepRstd: false).Y;
        }
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        var y = apply(kernels, x, weight!, eps)[0];
        // TorchSharp's node keeps an empty_like of each output and the forward's own handles: this scope frees them
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>vars: FusedRmsNorm, x, weight (or null), eps.</summary>
    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var (kernels, x, weight, eps) = ((FusedRmsNorm)vars[0], (Tensor)vars[1], vars[2] as Tensor, (double)vars[3]);
        var input = x.contiguous();   // x itself when contiguous (a new handle either way)
        var (y, rstd) = kernels.Forward(input, weight, eps, keepRstd: true);
        ctx.save_data("kernels", kernels);
        ctx.save_data("weighted", weight is not null);
        if (weight is not null) ctx.save_data("weight", new StrongBox<Tensor>(weight));   // the parameter itself (boxed: TorchSharp prints a warning for a tensor in save_data): backward adds dw into its .grad
        // saved as native SavedVariables when apply returns: these handles stay alive until then (the caller's scope frees them)
        ctx.save_for_backward(weight is null ? [input, rstd!] : [input, rstd!, weight]);
        return [y];
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReturnedGradients.Release();
        var kernels = (FusedRmsNorm)ctx.get_data("kernels");
        var saved = ctx.get_saved_variables();
        Tensor dx;
        Tensor? dw;
        using (var scope = NewDisposeScope())
        {
            var (x, rstd, weight) = (saved[0], saved[1], (bool)ctx.get_data("weighted") ? saved[2] : null);
            var dy = gradOutputs[0].contiguous();
            using var into = WeightGrad.Into(weight is null ? null : ((StrongBox<Tensor>)ctx.get_data("weight")).Value);   // null: dw goes back to autograd
            (dx, dw) = kernels.Backward(x, weight, rstd, dy, into);
            dx.MoveToOuterDisposeScope();
            dw?.MoveToOuterDisposeScope();
        }
        foreach (var s in saved) s.Dispose();
        foreach (var g in gradOutputs) g?.Dispose();
        ReturnedGradients.Keep([dx, dw]);
        return [null!, dx, dw!, null!];   // no gradients for the kernels object and eps
    }
}
