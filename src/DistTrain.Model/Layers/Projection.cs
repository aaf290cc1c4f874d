using System.Runtime.CompilerServices;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace DistTrain.Model.Layers;

/// <summary>
/// A bias-free linear layer y = x·wᵀ as one autograd node whose backward adds the weight's gradient into the
/// weight's own .grad (the trainer's flat gradient buffer) inside its GEMM (addmm_, beta = 1). Through
/// nn.Linear, autograd writes dw to a new tensor and then adds it into .grad in a separate pass over three
/// weight-sized tensors (the 405M step spent about 1 ms in these adds). Without such a .grad (<see cref="WeightGrad"/>)
/// dw goes back to autograd. Forward and x's gradient are the linear layer's own products.
/// </summary>
public sealed class Projection : MultiTensorFunction<Projection>
{
    public override string Name => nameof(Projection);

    /// <summary>x (..., D), weight (H, D) (the parameter itself: backward finds its .grad) -> (..., H).</summary>
    public static Tensor Apply(Tensor x, Tensor weight)
    {
        bool graph = is_grad_enabled() && (x.requires_grad || weight.requires_grad);
        if (!graph) return nn.functional.linear(x, weight);
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        var y = apply(x, weight)[0];
        // TorchSharp's node keeps an empty_like of each output and the forward's own handles: this scope frees them
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>vars: x, weight.</summary>
    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var (x, w) = ((Tensor)vars[0], (Tensor)vars[1]);
        ctx.save_data("weight", new StrongBox<Tensor>(w));   // the parameter itself (boxed: TorchSharp warns for a tensor in save_data): backward adds dw into its .grad
        ctx.save_data("dx", x.requires_grad);
        ctx.save_data("dw", w.requires_grad);
        // saved as native SavedVariables when apply returns: these handles stay alive until then (the caller's scope frees them)
        ctx.save_for_backward([x, w]);
        return [nn.functional.linear(x, w)];
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReturnedGradients.Release();
        var saved = ctx.get_saved_variables();
        Tensor? dx = null, dw = null;
        using (var scope = NewDisposeScope())
        {
            var (x, w) = (saved[0], saved[1]);
            var dy = gradOutputs[0].reshape(-1, w.shape[0]);   // (N, H)
            if ((bool)ctx.get_data("dx")) dx = dy.mm(w).view(x.shape).MoveToOuterDisposeScope();
            if ((bool)ctx.get_data("dw"))
                dw = WeightGradient(dy, x.reshape(-1, x.shape[^1]), ((StrongBox<Tensor>)ctx.get_data("weight")).Value!);
        }
        foreach (var s in saved) s.Dispose();
        foreach (var g in gradOutputs) g?.Dispose();
        ReturnedGradients.Keep([dx, dw]);
        return [dx!, dw!];
    }

    /// <summary>
    /// dyᵀ·rows (H, D) for dy (N, H) and rows (N, D): added into the weight's .grad inside the GEMM where it has one
    /// (null returned: nothing goes back to autograd), else a new tensor (moved out of the caller's scope) for autograd.
    /// </summary>
    internal static Tensor? WeightGradient(Tensor dy, Tensor rows, Tensor weight)
    {
        using var into = WeightGrad.Into(weight);
        if (into is null) return dy.t().mm(rows).MoveToOuterDisposeScope();
        into.addmm_(dy.t(), rows);
        return null;
    }
}
