using System.Runtime.CompilerServices;
using DistTrain.Model.Layers;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace DistTrain.Cuda.Ops.QkRotary;

/// <summary>
/// QK-norm with rotary as a custom autograd function: forward keeps x (the view itself: no copy),
/// the weight and the tables; backward runs the backward kernel (and the dw reduce). Without a
/// graph it is one forward launch and no autograd node.
/// </summary>
internal sealed class QkRotaryFunction : MultiTensorFunction<QkRotaryFunction>
{
    public override string Name => nameof(QkRotaryFunction);

    /// <summary>x (B, T, H, d), weight (d) or null, cos and sin (T', 1, d/2) -> (B, T, H, d) in x's dtype.</summary>
    public static Tensor Apply(FusedQkRotary kernels, Tensor x, Tensor? weight, double eps, Tensor cos, Tensor sin)
    {
        bool graph = is_grad_enabled() && (x.requires_grad || weight?.requires_grad == true);
        if (!graph)
            return kernels.Forward(x, weight, eps, cos, sin);
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        var y = apply(kernels, x, weight!, eps, cos, sin)[0];
        // TorchSharp's node keeps an empty_like of each output and the forward's own handles: this scope frees them
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>vars: FusedQkRotary, x, weight (or null), eps, cos, sin.</summary>
    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var (kernels, x, weight, eps, cos, sin) = ((FusedQkRotary)vars[0], (Tensor)vars[1], vars[2] as Tensor, (double)vars[3], (Tensor)vars[4], (Tensor)vars[5]);
        var y = kernels.Forward(x, weight, eps, cos, sin);
        ctx.save_data("kernels", kernels);
        ctx.save_data("eps", eps);
        ctx.save_data("weighted", weight is not null);
        if (weight is not null) ctx.save_data("weight", new StrongBox<Tensor>(weight));   // the parameter itself (boxed: TorchSharp prints a warning for a tensor in save_data): backward adds dw into its .grad
        // saved as native SavedVariables when apply returns (x's strides are kept: backward reads the same view)
        ctx.save_for_backward(weight is null ? [x, cos, sin] : [x, cos, sin, weight]);
        return [y];
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReturnedGradients.Release();
        var kernels = (FusedQkRotary)ctx.get_data("kernels");
        var saved = ctx.get_saved_variables();
        Tensor dx;
        Tensor? dw;
        using (var scope = NewDisposeScope())
        {
            var (x, cos, sin, weight) = (saved[0], saved[1], saved[2], (bool)ctx.get_data("weighted") ? saved[3] : null);
            var dy = gradOutputs[0];
            if (dy.stride(3) != 1) dy = dy.contiguous();   // a transposed gradient (strided over B, T, H) is read in place
            using var into = WeightGrad.Into(weight is null ? null : ((StrongBox<Tensor>)ctx.get_data("weight")).Value);   // null: dw goes back to autograd
            (dx, dw) = kernels.Backward(x, weight, (double)ctx.get_data("eps"), cos, sin, dy, into);
            dx.MoveToOuterDisposeScope();
            dw?.MoveToOuterDisposeScope();
        }
        foreach (var s in saved) s.Dispose();
        foreach (var g in gradOutputs) g?.Dispose();
        ReturnedGradients.Keep([dx, dw]);
        return [null!, dx, dw!, null!, null!, null!];   // no gradients for the kernels object, eps and the tables
    }
}
