using System.Runtime.CompilerServices;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace DistTrain.Model.Layers;

/// <summary>
/// The FFN's two input projections a = x·w1ᵀ and b = x·w3ᵀ as one autograd node. As two linear layers,
/// autograd would compute x's two gradients dA·w1 and dB·w3 and then add them (a full pass over three
/// (B, T, D) tensors a layer); here the second product accumulates into the first inside its GEMM
/// (addmm_, beta = 1). Forward and the weights' gradients are the linear layers' own products; the weights'
/// gradients go into their .grad inside their GEMMs where they have one, as in <see cref="Projection"/>.
/// </summary>
public sealed class GateProjections : MultiTensorFunction<GateProjections>
{
    public override string Name => nameof(GateProjections);

    /// <summary>x (..., D), w1 and w3 (H, D) -> (x·w1ᵀ, x·w3ᵀ), each (..., H).</summary>
    public static (Tensor A, Tensor B) Apply(Tensor x, Tensor w1, Tensor w3)
    {
        bool graph = is_grad_enabled() && (x.requires_grad || w1.requires_grad || w3.requires_grad);
        if (!graph)
            return (nn.functional.linear(x, w1), nn.functional.linear(x, w3));
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        var outputs = apply(x, w1, w3);
        // TorchSharp's node keeps an empty_like of each output and the forward's own handles: this scope frees them
        return (outputs[0].MoveToOuterDisposeScope(), outputs[1].MoveToOuterDisposeScope());
    }

    /// <summary>vars: x, w1, w3.</summary>
    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var (x, w1, w3) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2]);
        ctx.save_data("weights", new StrongBox<Tensor>[] { new(w1), new(w3) });   // the parameters themselves: backward adds into their .grad
        // saved as native SavedVariables when apply returns: these handles stay alive until then (the caller's scope frees them)
        ctx.save_for_backward([x, w1, w3]);
        return [nn.functional.linear(x, w1), nn.functional.linear(x, w3)];
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReturnedGradients.Release();
        var saved = ctx.get_saved_variables();
        Tensor dx;
        Tensor? dw1, dw3;
        using (var scope = NewDisposeScope())
        {
            var (x, w1, w3) = (saved[0], saved[1], saved[2]);
            var rows = x.reshape(-1, x.shape[^1]);                                       // (N, D)
            // materialize_grads is on (the default): an unused output's gradient arrives as zeros
            var (da, db) = (gradOutputs[0].reshape(-1, w1.shape[0]), gradOutputs[1].reshape(-1, w3.shape[0]));   // (N, H) each
            var dxRows = da.mm(w1);
            dxRows.addmm_(db, w3);   // dx = dA·w1 + dB·w3 in one pass over dx
            dx = dxRows.view(x.shape).MoveToOuterDisposeScope();
            var weights = (StrongBox<Tensor>[])ctx.get_data("weights");
            dw1 = Projection.WeightGradient(da, rows, weights[0].Value!);
            dw3 = Projection.WeightGradient(db, rows, weights[1].Value!);
        }
        foreach (var s in saved) s.Dispose();
        foreach (var g in gradOutputs) g?.Dispose();
        ReturnedGradients.Keep([dx, dw1, dw3]);
        return [dx, dw1!, dw3!];
    }
}
