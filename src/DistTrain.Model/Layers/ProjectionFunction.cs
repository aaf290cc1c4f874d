using System.Runtime.CompilerServices;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace DistTrain.Model.Layers;

/// <summary>
/// y = x Wᵀ as a custom autograd function whose backward accumulates dW = dyᵀ x straight into W's
/// existing .grad (the trainer's flat gradient buffer) with one GEMM (addmm, beta = 1), as
/// Megatron-LM's gradient-accumulation fusion does. Autograd would write dW into a new tensor and then
/// add it into .grad: one more full pass over every weight gradient and one launch per weight per
/// micro-step (about 430 adds per 405M MUDDFormer step). Without a .grad of the compute dtype yet
/// (tests, the first backward of a plain module) dW goes back to autograd as usual.
/// </summary>
public sealed class ProjectionFunction : MultiTensorFunction<ProjectionFunction>
{
    public override string Name => nameof(ProjectionFunction);

    /// <summary>x (..., in), weight (out, in) -> (..., out).</summary>
    public static Tensor Apply(Tensor x, Parameter weight)
    {
        bool grad = is_grad_enabled();
        bool needX = grad && x.requires_grad, needW = grad && weight.requires_grad;
        if (!needX && !needW) return nn.functional.linear(x, weight);
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        var y = apply(x, weight, needX, needW)[0];
        // TorchSharp's node keeps an empty_like of each output: leaving this scope frees it
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>vars: x, the weight parameter, whether x and the weight need gradients.</summary>
    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var (x, weight, needX, needW) = ((Tensor)vars[0], (Parameter)vars[1], (bool)vars[2], (bool)vars[3]);
        ctx.save_data("weight", new StrongBox<Parameter>(weight));   // the parameter itself (boxed: TorchSharp prints a warning for a tensor in save_data): backward reads its .grad
        ctx.save_data("needX", needX);
        ctx.save_data("needW", needW);
        ctx.save_for_backward(needW ? [x] : []);
        return [nn.functional.linear(x, weight)];
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReturnedGradients.Release();
        var weight = ((StrongBox<Parameter>)ctx.get_data("weight")).Value!;
        var (needX, needW) = ((bool)ctx.get_data("needX"), (bool)ctx.get_data("needW"));
        var saved = ctx.get_saved_variables();
        Tensor? dx = null, dw = null;
        using (var scope = NewDisposeScope())
        {
            var dy = gradOutputs[0];
            if (needX) dx = dy.matmul(weight).MoveToOuterDisposeScope();          // (..., out) @ (out, in)
            if (needW)
            {
                var dy2 = dy.reshape(-1, dy.shape[^1]);                          // (N, out)
                var x2 = saved[0].reshape(-1, saved[0].shape[^1]);              // (N, in)
                using var into = weight.grad;
                if (into is not null && into.dtype == dy.dtype && into.device_type == dy.device_type)
                    into.addmm_(dy2.t(), x2);                                    // .grad += dyᵀ x, one GEMM
                else
                    dw = dy2.t().mm(x2).MoveToOuterDisposeScope();
            }
        }
        foreach (var s in saved) s.Dispose();
        foreach (var g in gradOutputs) g?.Dispose();
        ReturnedGradients.Keep([dx, dw]);
        return [dx!, dw!, null!, null!];   // null: x needs none, or W's gradient is already in its .grad
    }
}
