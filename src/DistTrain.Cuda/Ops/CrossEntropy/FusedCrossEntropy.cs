using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Cuda.Ops.CrossEntropy;

/// <summary>
/// The chunked loss's softmax cross-entropy as one CUDA kernel (crossentropy.cu beside this file):
/// per row an online softmax over the logits, the row's loss in fp32, and the logits' gradient
/// written over the logits in the same launch. Not an autograd function: the chunked loss
/// (<see cref="Model.Layers.ChunkedCrossEntropy"/>) calls it inside its own forward. The reference
/// is <see cref="Model.Kernels.ReferenceKernels.CrossEntropyRows"/> (an fp32 copy of the chunk and
/// about ten passes over it). Its backward's scaling of the saved gradients is one kernel too (<see cref="Scale"/>).
/// </summary>
internal sealed class FusedCrossEntropy
{
    const string Source = "crossentropy.cu";
    const uint Block = 512;   // CE_BLOCK in crossentropy.cu
    const uint ScaleBlock = 256;   // __launch_bounds__ of cross_entropy_scale_*

    readonly CudaDevice _device;
    readonly CudaFunction _rows32, _rows16, _scale32, _scale16;

    public FusedCrossEntropy(CudaDevice device)
    {
        _device = device;
        var module = KernelModule.Get(device, Source);
        (_rows32, _rows16) = (module.Function("cross_entropy_rows_f32"), module.Function("cross_entropy_rows_bf16"));
        (_scale32, _scale16) = (module.Function("cross_entropy_scale_f32"), module.Function("cross_entropy_scale_bf16"));
    }

    /// <summary>What the kernel takes: contiguous (rows, V) fp32 or bf16 logits, int64 targets and fp32 losses of rows, all on this device.</summary>
    public bool Supports(Tensor logits, Tensor targets, Tensor losses) =>
        OnDevice(logits) && OnDevice(targets) && OnDevice(losses) &&
        logits.dtype is ScalarType.Float32 or ScalarType.BFloat16 && logits.dim() == 2 && logits.is_contiguous() &&
        targets.dtype == ScalarType.Int64 && targets.dim() == 1 && targets.shape[0] == logits.shape[0] && targets.is_contiguous() &&
        losses.dtype == ScalarType.Float32 && losses.dim() == 1 && losses.shape[0] == logits.shape[0] && losses.is_contiguous();

    /// <summary>losses ← each row's loss; with <paramref name="meanOver"/>, logits ← the gradient of Σ losses / meanOver.</summary>
    public void Rows(Tensor logits, Tensor targets, Tensor losses, long? meanOver)
    {
        const string op = "cross-entropy";
        var dtype = logits.dtype;
        nint px = TensorArgs.Pointer(logits, _device, op, "logits", dtype),
             pt = TensorArgs.Pointer(targets, _device, op, "targets", ScalarType.Int64),
             pl = TensorArgs.Pointer(losses, _device, op, "losses", ScalarType.Float32);
        long rows = logits.shape[0], v = logits.shape[1];
        if (rows == 0) return;
        long per = dtype == ScalarType.BFloat16 ? 8 : 4;
        int vec = px % 16 == 0 && v % per == 0 ? 1 : 0;   // every row then starts on 16 bytes
        KernelLaunch.Launch(dtype == ScalarType.BFloat16 ? _rows16 : _rows32, ((uint)Math.Min(rows, int.MaxValue), 1), (Block, 1),
            () => $"logits {TensorArgs.Describe(logits)}, targets {TensorArgs.Describe(targets)}",
            Arg.Ptr(px), Arg.Ptr(pt), Arg.Ptr(pl), Arg.I64(rows), Arg.I64(v), Arg.F32(meanOver is long n ? n : 0f), Arg.I32(vec));
    }

    /// <summary>What the scale kernel takes: x and y contiguous, of one dtype (fp32 or bf16) and size, scale one fp32 value, all on this device.</summary>
    public bool SupportsScale(Tensor y, Tensor x, Tensor scale) =>
        OnDevice(y) && OnDevice(x) && OnDevice(scale) && x.dtype is ScalarType.Float32 or ScalarType.BFloat16 && y.dtype == x.dtype &&
        y.numel() == x.numel() && x.is_contiguous() && y.is_contiguous() && scale.dtype == ScalarType.Float32 && scale.numel() == 1;

    /// <summary>y ← scale·x, or y += scale·x with <paramref name="accumulate"/> (y may be x): one pass, scale read on the device.</summary>
    public void Scale(Tensor y, Tensor x, Tensor scale, bool accumulate)
    {
        const string op = "cross-entropy gradient scale";
        var dtype = x.dtype;
        nint px = TensorArgs.Pointer(x, _device, op, "x", dtype), py = TensorArgs.Pointer(y, _device, op, "y", dtype),
             ps = TensorArgs.Pointer(scale, _device, op, "scale", ScalarType.Float32);
        long n = x.numel(), per = dtype == ScalarType.BFloat16 ? 8 : 4;
        if (n == 0) return;
        int vec = px % 16 == 0 && py % 16 == 0 ? 1 : 0;
        uint blocks = (uint)Math.Min(((n + per - 1) / per + ScaleBlock - 1) / ScaleBlock, (long)_device.Multiprocessors * 16);
        KernelLaunch.Launch(dtype == ScalarType.BFloat16 ? _scale16 : _scale32, (blocks, 1), (ScaleBlock, 1),
            () => $"x {TensorArgs.Describe(x)}, y {TensorArgs.Describe(y)}, scale {TensorArgs.Describe(scale)}",
            Arg.Ptr(px), Arg.Ptr(py), Arg.Ptr(ps), Arg.I64(n), Arg.I32(accumulate ? 1 : 0), Arg.I32(vec));
    }

    bool OnDevice(Tensor t) => t.device_type == DeviceType.CUDA && t.device_index == _device.Index;
}
