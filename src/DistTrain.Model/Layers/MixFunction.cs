using DistTrain.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace DistTrain.Model.Layers;

/// <summary>
/// The dense mixing as a custom autograd function (the reference of <see cref="IKernels.Mix"/>). Per
/// token, the C streams are (C × L) @ (L × D): the hiddens are stacked into (B·T, L, D) for one
/// batched matmul, read once instead of once per stream and term, and the stack is a temporary:
/// backward keeps only dw and the hiddens (alive anyway) and stacks again. A loop of multiply-adds
/// (the official code) does 4·L passes over hidden-sized tensors per layer forward and more backward.
/// The hiddens' gradients go through <see cref="HiddenGradients"/> when the forward pass has one.
/// </summary>
public sealed class MixFunction : MultiTensorFunction<MixFunction>
{
    public override string Name => nameof(MixFunction);

    /// <summary>hiddens h_0..h_{L-1} (B, T, D), dw (C, B, T, L) -> C streams (B, T, D).</summary>
    public static Tensor[] Apply(IReadOnlyList<Tensor> hiddens, Tensor dw, HiddenGradients? gradients)
    {
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        var streams = apply([gradients!, dw, .. hiddens]);
        // TorchSharp's node keeps an empty_like of each output: leaving this scope frees them
        return streams.Select(t => t.MoveToOuterDisposeScope()).ToArray();
    }

    /// <summary>vars: HiddenGradients (or null), dw (C, B, T, L), h_0..h_{L-1} (B, T, D).</summary>
    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var tensors = vars.Skip(1).Cast<Tensor>().ToList();
        ctx.save_data("gradients", vars[0]);
        ctx.save_for_backward(tensors);
        using var scope = NewDisposeScope();
        var (dw, hiddens) = (tensors[0], tensors.Skip(1).ToList());
        long c = dw.shape[0], b = dw.shape[1], t = dw.shape[2], l = dw.shape[3], d = hiddens[0].shape[^1];
        var stacked = stack(hiddens, dim: 2).view(b * t, l, d);               // (BT, L, D)
        var weights = dw.permute(1, 2, 0, 3).reshape(b * t, c, l);            // (BT, C, L)
        var mixed = bmm(weights.to(stacked.dtype), stacked).view(b, t, c, d);  // (B, T, C, D)
        return Enumerable.Range(0, (int)c).Select(i => mixed.select(2, i).contiguous().MoveToOuterDisposeScope()).ToList();
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReturnedGradients.Release();
        var saved = ctx.get_saved_variables();
        var gradients = ctx.get_data("gradients") as HiddenGradients;
        List<Tensor?> grads;
        using (var scope = NewDisposeScope())
        {
            var (dw, hiddens) = (saved[0], saved.Skip(1).ToList());
            long c = dw.shape[0], b = dw.shape[1], t = dw.shape[2], l = dw.shape[3], d = hiddens[0].shape[^1];
            var stacked = stack(hiddens, dim: 2).view(b * t, l, d);                                    // (BT, L, D)
            var grad = stack(gradOutputs.Select(g => g ?? zeros_like(hiddens[0])).ToList(), dim: 2).view(b * t, c, d);   // (BT, C, D)
            var weights = dw.permute(1, 2, 0, 3).reshape(b * t, c, l).to(stacked.dtype);
            var gradDw = bmm(grad, stacked.transpose(1, 2)).view(b, t, c, l).permute(2, 0, 1, 3).to(dw.dtype).contiguous();   // (C, B, T, L)
            var gradH = bmm(weights.transpose(1, 2), grad).view(b, t, l, d);                           // (B, T, L, D)
            grads = [gradDw];
            for (int j = 0; j < l; j++)
            {
                var own = gradH.select(2, j);
                grads.Add(gradients is null ? own.contiguous() : gradients.Route(j, (int)l, own));   // null: kept in the buffer
            }
            foreach (var g in grads) g?.MoveToOuterDisposeScope();
        }
        foreach (var s in saved) s.Dispose();
        foreach (var g in gradOutputs) g?.Dispose();
        ReturnedGradients.Keep(grads);
        return [null!, .. grads.Select(g => g!)];   // no gradient for the HiddenGradients object; null for a hidden whose buffer keeps it
    }
}
