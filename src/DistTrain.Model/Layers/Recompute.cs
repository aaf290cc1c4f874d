using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace DistTrain.Model.Layers;

/// <summary>
/// Activation checkpointing as a custom autograd function: forward runs a region without building
/// its graph and keeps only the region's inputs; backward runs the region again with grad on
/// detached copies of those inputs and back-propagates through it, which accumulates the
/// parameters' gradients and yields the inputs'. The models have no dropout, so the recomputation
/// is exact. The region's second argument says whether its output's values are needed: true in
/// forward, false in backward's re-run, which reads only the output's graph (a region may then leave
/// its last op's values unwritten: <see cref="ProjectedResidual"/>).
/// </summary>
public sealed class Recompute : MultiTensorFunction<Recompute>
{
    public override string Name => nameof(Recompute);

    /// <summary>Runs <paramref name="region"/> on <paramref name="inputs"/>, recomputing it in backward instead of keeping its activations.</summary>
    public static Tensor Run(Func<Tensor[], bool, Tensor> region, params Tensor[] inputs)
    {
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        var output = apply([region, .. inputs])[0];
        // TorchSharp's node keeps an empty_like of each output (to materialize missing grads): this
        // scope frees it now, or it would cost one more hidden-sized tensor per checkpointed layer
        return output.MoveToOuterDisposeScope();
    }

    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        ctx.save_data("region", vars[0]);
        ctx.save_for_backward(vars.Skip(1).Cast<Tensor>().ToList());
        ctx.set_materialize_grads(false);
        return [((Func<Tensor[], bool, Tensor>)vars[0])(vars.Skip(1).Cast<Tensor>().ToArray(), true)];
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReturnedGradients.Release();
        var region = (Func<Tensor[], bool, Tensor>)ctx.get_data("region");
        List<Tensor> grads;
        using (var scope = NewDisposeScope())
        {
            var saved = ctx.get_saved_variables();
            var inputs = saved.Select(t => t.detach().requires_grad_(t.requires_grad)).ToArray();
            Tensor output;
            using (enable_grad()) output = region(inputs, false);   // only its graph is used
            autograd.backward([output], [gradOutputs[0]]);
            grads = inputs.Select(i => i.requires_grad ? i.grad : null).ToList()!;
            foreach (var g in grads) g?.MoveToOuterDisposeScope();
        }
        foreach (var g in gradOutputs) g?.Dispose();
        ReturnedGradients.Keep(grads);
        return [null!, .. grads];   // no gradient for the region delegate (apply's first argument)
    }
}
