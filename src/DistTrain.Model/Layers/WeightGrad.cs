using static TorchSharp.torch;

namespace DistTrain.Model.Layers;

/// <summary>
/// A weight's existing .grad (the trainer's flat gradient buffer view) for a custom backward to add its dw
/// into (a kernel, or a GEMM with beta = 1), saving autograd's separate add and launch; null when the weight
/// has none of its own dtype, shape and device, and dw then goes back to autograd. The caller disposes the handle.
/// Public: DistTrain.Cuda's fused ops use it too.
/// </summary>
public static class WeightGrad
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
