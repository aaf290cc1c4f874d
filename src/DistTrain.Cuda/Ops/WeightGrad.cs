using static TorchSharp.torch;

namespace DistTrain.Cuda.Ops;

/// <summary>
/// A weight's existing .grad (the trainer's flat gradient buffer view) for a backward kernel to add its dw
/// into, saving autograd's separate add and launch; null when the weight has none of its own dtype, shape
/// and device, and dw then goes back to autograd. The caller disposes the handle.
/// </summary>
internal static class WeightGrad
{
    public static Tensor? Into(Tensor? weight)
    {
        var grad = weight?.grad;
        if (grad is null) return null;
        if (grad.dtype == weight!.dtype && grad.is_contiguous() && grad.shape.SequenceEqual(weight.shape) &&
            grad.device_type == weight.device_type && grad.device_index == weight.device_index)
            return grad;
        grad.Dispose();
        return null;
    }
}
