using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Cuda.Ops.AdamW;

/// <summary>
/// AdamW over the flat buffers in two kernel launches (adamw.cu beside this file) and no host sync:
/// the global gradient norm with the clip scale and the non-finite guard on the device, then one
/// pass over master, moments and parameters. Same semantics as the reference FlatAdamW step
/// (DistTrain.Training), which the GPU self-test compares it with.
/// </summary>
public sealed class FusedAdamW : IDisposable
{
    const string Source = "adamw.cu";
    const int Block = 256;      // BLOCK in adamw.cu
    const int MaxParts = 1024;  // MAX_PARTS in adamw.cu

    readonly CudaDevice _device;
    readonly CudaFunction _norm32, _norm16, _update32, _update16;
    readonly Tensor _partials, _counter, _scalars;   // scratch: MaxParts fp32, one uint32 (kept 0 between steps), 4 fp32

    public FusedAdamW(CudaDevice device)
    {
        _device = device;
        var module = KernelModule.Get(device, Source);
        (_norm32, _norm16) = (module.Function("adamw_norm_f32"), module.Function("adamw_norm_bf16"));
        (_update32, _update16) = (module.Function("adamw_update_f32"), module.Function("adamw_update_bf16"));
        var on = new Device(DeviceType.CUDA, device.Index);
        _partials = zeros([MaxParts], ScalarType.Float32, on);
        _counter = zeros([1], ScalarType.Int32, on);
        _scalars = zeros([4], ScalarType.Float32, on);
    }

    /// <summary>fp32 master on this device, bf16 or fp32 gradients, bf16 parameters or none: the fused step takes these.</summary>
    public bool Supports(AdamWBuffers b) =>
        b.Master.device_type == DeviceType.CUDA && b.Master.device_index == _device.Index && b.Master.dtype == ScalarType.Float32 &&
        b.Grads.dtype is ScalarType.Float32 or ScalarType.BFloat16 && (b.Params is null || b.Params.dtype == ScalarType.BFloat16);

    /// <summary>One step at learning rate <paramref name="lr"/>; <paramref name="stepIndex"/> is what FirstNonFinite records. Returns the pre-clip gradient norm (0-dim fp32 on the device).</summary>
    public Tensor Step(AdamWBuffers b, AdamWSettings s, double lr, long stepIndex)
    {
        const string op = "adamw";
        long n = b.Master.numel();
        if (b.Grads.numel() != n || b.ExpAvg.numel() != n || b.ExpAvgSq.numel() != n || (b.Params is not null && b.Params.numel() != n))
            throw new ArgumentException($"{op}: buffers of different lengths: master {n}, grads {b.Grads.numel()}, moments {b.ExpAvg.numel()}/{b.ExpAvgSq.numel()}, params {b.Params?.numel()}");
        var norm = empty([], ScalarType.Float32, b.Master.device);
        bool bf16 = b.Grads.dtype == ScalarType.BFloat16;
        long sms = _device.Multiprocessors;
        uint normBlocks = (uint)Math.Max(1, Math.Min((n + Block - 1) / Block, Math.Min(MaxParts, sms * 4)));
        uint updateBlocks = (uint)Math.Max(1, Math.Min((n + Block - 1) / Block, sms * 8));
        string Shapes() => $"{n} elements, grads {b.Grads.dtype}, params {(b.Params is null ? "= master" : "bf16")}, decay {b.DecayCount}";

        nint grads = TensorArgs.Pointer(b.Grads, _device, op, "grads", b.Grads.dtype);
        nint master = TensorArgs.Pointer(b.Master, _device, op, "master", ScalarType.Float32),
             expAvg = TensorArgs.Pointer(b.ExpAvg, _device, op, "exp_avg", ScalarType.Float32),
             expAvgSq = TensorArgs.Pointer(b.ExpAvgSq, _device, op, "exp_avg_sq", ScalarType.Float32),
             parameters = b.Params is null ? 0 : TensorArgs.Pointer(b.Params, _device, op, "params", ScalarType.BFloat16);
        // 16-byte accesses when every buffer starts on 16 bytes (whole allocations do)
        int vec = grads % 16 == 0 && master % 16 == 0 && expAvg % 16 == 0 && expAvgSq % 16 == 0 && parameters % 16 == 0 ? 1 : 0;
        KernelLaunch.Launch(bf16 ? _norm16 : _norm32, (normBlocks, 1), (Block, 1), Shapes,
            Arg.Ptr(grads), Arg.I64(n),
            Arg.Ptr(TensorArgs.Pointer(_partials, _device, op, "partials", ScalarType.Float32)),
            Arg.Ptr(TensorArgs.Pointer(_counter, _device, op, "counter", ScalarType.Int32)),
            Arg.Ptr(TensorArgs.Pointer(norm, _device, op, "norm", ScalarType.Float32)),
            Arg.Ptr(TensorArgs.Pointer(_scalars, _device, op, "scalars", ScalarType.Float32)),
            Arg.Ptr(TensorArgs.Pointer(b.Steps, _device, op, "steps", ScalarType.Float64)),
            Arg.Ptr(TensorArgs.Pointer(b.FirstNonFinite, _device, op, "first non-finite step", ScalarType.Int64)),
            Arg.I64(stepIndex), Arg.F32((float)s.GradClip), Arg.F64(s.Beta1), Arg.F64(s.Beta2), Arg.I32(vec));

        // the reference's fp32 arithmetic: lrEff·wd and 1 - that are fp32 tensors there
        float lr32 = (float)lr;
        float decayFactor = 1f - lr32 * (float)s.WeightDecay;
        KernelLaunch.Launch(bf16 ? _update16 : _update32, (updateBlocks, 1), (Block, 1), Shapes,
            Arg.Ptr(grads), Arg.Ptr(master), Arg.Ptr(expAvg), Arg.Ptr(expAvgSq), Arg.Ptr(parameters),
            Arg.I64(n), Arg.I64(s.WeightDecay > 0 ? b.DecayCount : 0),
            Arg.Ptr(TensorArgs.Pointer(_scalars, _device, op, "scalars", ScalarType.Float32)),
            Arg.F32(lr32), Arg.F32((float)s.Beta1), Arg.F32((float)s.Beta2), Arg.F32((float)s.Eps), Arg.F32(decayFactor), Arg.I32(vec));
        return norm;
    }

    public void Dispose()
    {
        _partials.Dispose();
        _counter.Dispose();
        _scalars.Dispose();
    }
}
