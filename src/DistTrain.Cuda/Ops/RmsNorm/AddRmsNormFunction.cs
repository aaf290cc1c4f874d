using System.Runtime.CompilerServices;
using DistTrain.Model.Layers;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace DistTrain.Cuda.Ops.RmsNorm;

/// <summary>
/// The residual add before an RMSNorm fused with it, as a custom autograd function: forward writes
/// the sum and its norm in one launch and keeps the sum (an output, alive anyway), the weight and the
/// fp32 rstd; backward writes dx = dSum + the norm's gradient in one pass, handed back for both
/// addends (what autograd's separate add of the sum's two gradients did). Without a graph (no_grad,
/// or nothing requires grad) it is one forward launch and no autograd node.
/// </summary>
internal sealed class AddRmsNormFunction : MultiTensorFunction<AddRmsNormFunction>
{
    public override string Name => nameof(AddRmsNormFunction);

    /// <summary>a, b (..., D) of one shape and dtype, weight (D) or null -> (a + b, RMSNorm(a + b)) in a's dtype.</summary>
    public static (Tensor Sum, Tensor Normed) Apply(FusedRmsNorm kernels, Tensor a, Tensor b, Tensor? weight, double eps)
    {
        bool graph = is_grad_enabled() && (a.requires_grad || b.requires_grad || weight?.requires_grad == true);
        if (!graph)
        {
            using var x = a.contiguous();
            using var residual = b.contiguous();
            var (sum, y, _) = kernels.AddForward(x, residual, weight, eps, keepRstd: false);
            return (sum, y);
        }
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        var outputs = apply(kernels, a, b, weight!, eps);
        // TorchSharp's node keeps an empty_like of each output and the forward's own handles: this scope frees them
        return (outputs[0].MoveToOuterDisposeScope(), outputs[1].MoveToOuterDisposeScope());
    }

    /// <summary>vars: FusedRmsNorm, a, b, weight (or null), eps.</summary>
    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var (kernels, a, b, weight, eps) = ((FusedRmsNorm)vars[0], (Tensor)vars[1], (Tensor)vars[2], vars[3] as Tensor, (double)vars[4]);
        var (x, residual) = (a.contiguous(), b.contiguous());   // a and b themselves when contiguous (new handles either way)
        var (sum, y, rstd) = kernels.AddForward(x, residual, weight, eps, keepRstd: true);
        ctx.save_data("kernels", kernels);
        ctx.save_data("weighted", weight is not null);
        if (weight is not null) ctx.save_data("weight", new StrongBox<Tensor>(weight));   // the parameter itself (boxed: TorchSharp prints a warning for a tensor in save_data): backward adds dw into its .grad
        // saved as native SavedVariables when apply returns (sum as an output of this node: no reference cycle); the caller's scope frees these handles
        ctx.save_for_backward(weight is null ? [sum, rstd!] : [sum, rstd!, weight]);
        ctx.set_materialize_grads(false);   // an unused output's gradient stays missing: no zero-filled tensor
        return [sum, y];
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
            var (dSum, dNormed) = (Defined(gradOutputs[0]), Defined(gradOutputs[1]));
            var dy = dNormed?.contiguous() ?? zeros_like(x);   // the norm unused: its gradient is zero
            var dres = dSum?.contiguous();                      // the sum used only by the norm: nothing to add
            using var into = WeightGrad.Into(weight is null ? null : ((StrongBox<Tensor>)ctx.get_data("weight")).Value);   // null: dw goes back to autograd
            (dx, dw) = kernels.Backward(x, weight, rstd, dy, into, dres);
            dx.MoveToOuterDisposeScope();
            dw?.MoveToOuterDisposeScope();
        }
        foreach (var s in saved) s.Dispose();
        foreach (var g in gradOutputs) g?.Dispose();
        ReturnedGradients.Keep([dx, dw]);
        return [null!, dx, dx, dw!, null!];   // the sum's gradient goes to both addends; none for the kernels object and eps
    }

    /// <summary>A missing output gradient (materialize_grads off) arrives as null or as an empty handle.</summary>
    static Tensor? Defined(Tensor? g) => g is null || g.IsInvalid ? null : g;
}
