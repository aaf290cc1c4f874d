using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Cuda.Ops.SwiGlu;

/// <summary>
/// SwiGLU's gate as CUDA kernels (swiglu.cu beside this file): forward y = silu(a)·b in one pass,
/// backward da and db in one pass (nothing saved but a and b), fp32 inside, bf16 or fp32 in and out,
/// 16-byte vectors when every pointer allows. The reference is <see cref="Model.Kernels.ReferenceKernels.SwiGlu"/>
/// (silu, then a multiply: 2 dispatches forward, 3 backward, each a full pass).
/// </summary>
internal sealed class FusedSwiGlu
{
    const string Source = "swiglu.cu";
    const uint Block = 256;   // __launch_bounds__(256) in swiglu.cu

    readonly CudaDevice _device;
    readonly CudaFunction _forward32, _forward16, _backward32, _backward16;

    public FusedSwiGlu(CudaDevice device)
    {
        _device = device;
        var module = KernelModule.Get(device, Source);
        (_forward32, _forward16) = (module.Function("swiglu_forward_f32"), module.Function("swiglu_forward_bf16"));
        (_backward32, _backward16) = (module.Function("swiglu_backward_f32"), module.Function("swiglu_backward_bf16"));
    }

    /// <summary>What these kernels take: a and b of one shape, fp32 or bf16, on this device. Anything else runs the reference.</summary>
    public bool Supports(Tensor a, Tensor b) =>
        a.device_type == DeviceType.CUDA && a.device_index == _device.Index &&
        b.device_type == DeviceType.CUDA && b.device_index == _device.Index &&
        a.dtype is ScalarType.Float32 or ScalarType.BFloat16 && b.dtype == a.dtype && a.shape.SequenceEqual(b.shape);

    /// <summary>a, b contiguous -> y like a.</summary>
    public Tensor Forward(Tensor a, Tensor b)
    {
        const string op = "swiglu forward";
        var dtype = a.dtype;
        var y = empty_like(a);
        nint pa = TensorArgs.Pointer(a, _device, op, "a", dtype), pb = TensorArgs.Pointer(b, _device, op, "b", dtype),
             py = TensorArgs.Pointer(y, _device, op, "y", dtype);
        long n = a.numel();
        KernelLaunch.Launch(dtype == ScalarType.BFloat16 ? _forward16 : _forward32, (Blocks(n, dtype, 16), 1), (Block, 1),
            () => $"a {TensorArgs.Describe(a)}, b {TensorArgs.Describe(b)}",
            Arg.Ptr(pa), Arg.Ptr(pb), Arg.Ptr(py), Arg.I64(n), Arg.I32(Vectors(pa, pb, py)));
        return y;
    }

    /// <summary>a, b, dy contiguous -> da, db like a.</summary>
    public (Tensor Da, Tensor Db) Backward(Tensor a, Tensor b, Tensor dy)
    {
        const string op = "swiglu backward";
        var dtype = a.dtype;
        var (da, db) = (empty_like(a), empty_like(b));
        nint pa = TensorArgs.Pointer(a, _device, op, "a", dtype), pb = TensorArgs.Pointer(b, _device, op, "b", dtype),
             pdy = TensorArgs.Pointer(dy, _device, op, "dy", dtype),
             pda = TensorArgs.Pointer(da, _device, op, "da", dtype), pdb = TensorArgs.Pointer(db, _device, op, "db", dtype);
        long n = a.numel();
        KernelLaunch.Launch(dtype == ScalarType.BFloat16 ? _backward16 : _backward32, (Blocks(n, dtype, 8), 1), (Block, 1),
            () => $"a {TensorArgs.Describe(a)}, b {TensorArgs.Describe(b)}, dy {TensorArgs.Describe(dy)}",
            Arg.Ptr(pa), Arg.Ptr(pb), Arg.Ptr(pdy), Arg.Ptr(pda), Arg.Ptr(pdb), Arg.I64(n), Arg.I32(Vectors(pa, pb, pdy, pda, pdb)));
        return (da, db);
    }

    /// <summary>1 when every pointer is 16-byte aligned: the kernel then moves 16 bytes per access.</summary>
    static int Vectors(params ReadOnlySpan<nint> pointers)
    {
        foreach (var p in pointers)
            if (p % 16 != 0) return 0;
        return 1;
    }

    /// <summary>One thread per 16-byte vector, grid-stride past <paramref name="perSm"/> blocks per SM.</summary>
    uint Blocks(long n, ScalarType dtype, int perSm)
    {
        long vectors = (n + (dtype == ScalarType.BFloat16 ? 8 : 4) - 1) / (dtype == ScalarType.BFloat16 ? 8 : 4);
        return (uint)Math.Min((vectors + Block - 1) / Block, (long)_device.Multiprocessors * perSm);
    }
}
