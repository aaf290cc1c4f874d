using static TorchSharp.torch;

namespace DistTrain.Model.Layers;

/// <summary>
/// Handles of gradients a custom autograd function hands back to autograd. Backward may run on the
/// engine's device thread, outside any dispose scope, and autograd copies the returned tensors only
/// after the function returns; so each handle is freed at the next custom backward or forward.
/// Public: every custom autograd function (DistTrain.Cuda's fused ops too) follows this rule.
/// </summary>
public static class ReturnedGradients
{
    static readonly List<Tensor> Pending = [];

    public static void Keep(IEnumerable<Tensor?> grads)
    {
        lock (Pending) Pending.AddRange(grads.Where(g => g is not null)!);
    }

    public static void Release()
    {
        lock (Pending)
        {
            foreach (var t in Pending) t.Dispose();
            Pending.Clear();
        }
    }
}
