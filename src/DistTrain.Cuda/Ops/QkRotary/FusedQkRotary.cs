using DistTrain.Model;
using DistTrain.Cuda.Native;
using DistTrain.Cuda.Ops.RmsNorm;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Cuda.Ops.QkRotary;

/// <summary>
/// QK-norm and rotary in one kernel per pass (qkrotary.cu beside this file), for q or k (B, T, H, d):
/// forward reads x in place (a strided view of the wqkv output is fine: no copy) and writes y
/// contiguous; backward recomputes each row's rstd from x, writes dx and, with a weight, per-warp
/// fp32 partial sums that rmsnorm.cu's dw reduce sums to dweight. fp32 inside, bf16 or fp32 in and
/// out. The reference is <see cref="Model.Kernels.ReferenceKernels.QkNormRotary"/>: about 20
/// dispatches forward (casts, norm, 2 slices, 6 products, stack, flatten, cast) and as many backward.
/// </summary>
internal sealed class FusedQkRotary
{
    const string Source = "qkrotary.cu";
    const int MaxPairsPerLane = 4;                  // MAXP in qkrotary.cu
    public const int MaxHeadDim = 64 * MaxPairsPerLane;
    internal const uint RowsPerBlock = 8;                    // block (32, 8): a warp per row; __launch_bounds__(256); QKR_WARPS in qkrotary.cu

    readonly CudaDevice _device;
    readonly CudaFunction _forward32, _forward16, _backward32, _backward16, _reduce32, _reduce16;
    readonly CudaFunction _forward32v, _forward16v, _backward32v, _backward16v;
    readonly CudaFunction _forwardPair16v, _backwardPair16v, _reduceSets16;

    public FusedQkRotary(CudaDevice device)
    {
        _device = device;
        var module = KernelModule.Get(device, Source);
        (_forward32, _forward16) = (module.Function("qkrotary_forward_f32"), module.Function("qkrotary_forward_bf16"));
        (_backward32, _backward16) = (module.Function("qkrotary_backward_f32"), module.Function("qkrotary_backward_bf16"));
        (_forward32v, _forward16v) = (module.Function("qkrotary_forward_f32_v"), module.Function("qkrotary_forward_bf16_v"));
        (_backward32v, _backward16v) = (module.Function("qkrotary_backward_f32_v"), module.Function("qkrotary_backward_bf16_v"));
        // (parts, d) fp32 partials -> dw: the same reduction as RMSNorm's
        var rms = KernelModule.Get(device, "rmsnorm.cu");
        (_reduce32, _reduce16) = (rms.Function("rmsnorm_dw_reduce_f32"), rms.Function("rmsnorm_dw_reduce_bf16"));
        (_forwardPair16v, _backwardPair16v) = (module.Function("qkrotary_forward_pair_bf16_v"), module.Function("qkrotary_backward_pair_bf16_v"));
        _reduceSets16 = rms.Function("rmsnorm_dw_reduce_sets_bf16");
    }

    /// <summary>
    /// What these kernels take: x (B, T, H, d) fp32 or bf16 on this device with unit stride over an even
    /// d ≤ 256 and T, H below 2³¹; weight (d) of x's dtype or null; cos and sin fp32 (T', 1, d/2)
    /// contiguous with T' ≥ T. Anything else runs the reference.
    /// </summary>
    public bool Supports(Tensor x, Tensor? weight, Tensor cos, Tensor sin)
    {
        if (x.device_type != DeviceType.CUDA || x.device_index != _device.Index || x.dtype is not (ScalarType.Float32 or ScalarType.BFloat16) || x.dim() != 4)
            return false;
        long t = x.shape[1], h = x.shape[2], d = x.shape[3];
        if (d % 2 != 0 || d is < 2 or > MaxHeadDim || x.stride(3) != 1 || t > int.MaxValue || h > int.MaxValue)
            return false;
        if (weight is not null && (weight.dtype != x.dtype || weight.dim() != 1 || weight.shape[0] != d ||
                                   weight.device_type != DeviceType.CUDA || weight.device_index != _device.Index || !weight.is_contiguous()))
            return false;
        foreach (var table in new[] { cos, sin })
            if (table.device_type != DeviceType.CUDA || table.device_index != _device.Index || table.dtype != ScalarType.Float32 ||
                table.dim() != 3 || table.shape[0] < t || table.shape[1] != 1 || table.shape[2] != d / 2 || !table.is_contiguous())
                return false;
        return true;
    }

    /// <summary>x (B, T, H, d) view with unit stride over d -> y (B, T, H, d) contiguous in x's dtype.</summary>
    public Tensor Forward(Tensor x, Tensor? weight, double eps, Tensor cos, Tensor sin)
    {
        const string op = "qk-norm rotary forward";
        var dtype = x.dtype;
        var y = empty(x.shape, dtype, x.device);
        long rows = y.numel() / x.shape[3];
        if (rows == 0)
            return y;
        nint px = StridedPointer(x, op, "x", dtype), pw = weight is null ? 0 : TensorArgs.Pointer(weight, _device, op, "weight", dtype),
             pcos = TensorArgs.Pointer(cos, _device, op, "cos", ScalarType.Float32), psin = TensorArgs.Pointer(sin, _device, op, "sin", ScalarType.Float32),
             py = TensorArgs.Pointer(y, _device, op, "y", dtype);
        int perWarp = Grouped(x, rows, px, pw, pcos, psin, py);
        long perBlock = RowsPerBlock * Math.Max(1, perWarp);   // rows a block covers in one pass
        uint blocks = (uint)Math.Min((rows + perBlock - 1) / perBlock, (long)_device.Multiprocessors * 16);
        var kernel = perWarp > 0 ? (dtype == ScalarType.BFloat16 ? _forward16v : _forward32v) : (dtype == ScalarType.BFloat16 ? _forward16 : _forward32);
        KernelLaunch.Launch(kernel, (blocks, 1), (32, RowsPerBlock),
            () => $"x {Strided(x)}, weight {(weight is null ? "none" : TensorArgs.Describe(weight))}, cos {TensorArgs.Describe(cos)}",
            Arg.Ptr(px), Arg.Ptr(pw), Arg.Ptr(pcos), Arg.Ptr(psin), Arg.Ptr(py),
            Arg.I64(rows), Arg.I32((int)x.shape[1]), Arg.I32((int)x.shape[2]), Arg.I32((int)x.shape[3]),
            Arg.I64(x.stride(0)), Arg.I64(x.stride(1)), Arg.I64(x.stride(2)), Arg.F32((float)eps));
        return y;
    }

    /// <summary>
    /// x as in forward, dy (B, T, H, d) with unit stride over d -> dx (B, T, H, d) contiguous, and dw (d) with a weight;
    /// with <paramref name="dwInto"/> (the weight's .grad, contiguous, of its dtype) dw is added into it instead and Dw is null.
    /// </summary>
    public (Tensor Dx, Tensor? Dw) Backward(Tensor x, Tensor? weight, double eps, Tensor cos, Tensor sin, Tensor dy, Tensor? dwInto = null)
    {
        const string op = "qk-norm rotary backward";
        var dtype = x.dtype;
        long d = x.shape[3];
        var dx = empty(x.shape, dtype, x.device);
        long rows = dx.numel() / d;
        if (rows == 0)
            return (dx, weight is null || dwInto is not null ? null : zeros_like(weight));
        nint px = StridedPointer(x, op, "x", dtype), pw = weight is null ? 0 : TensorArgs.Pointer(weight, _device, op, "weight", dtype),
             pcos = TensorArgs.Pointer(cos, _device, op, "cos", ScalarType.Float32), psin = TensorArgs.Pointer(sin, _device, op, "sin", ScalarType.Float32),
             pdy = StridedPointer(dy, op, "dy", dtype), pdx = TensorArgs.Pointer(dx, _device, op, "dx", dtype);
        int perWarp = Grouped(x, rows, px, pw, pcos, psin, pdx);
        if (perWarp > 0 && (Grouped(dy, rows, pdy) == 0)) perWarp = 0;
        // few enough blocks that the partial rows stay small (parts x d fp32), enough to fill the GPU
        uint blocks = (uint)Math.Min((rows + RowsPerBlock * Math.Max(1, perWarp) - 1) / (RowsPerBlock * Math.Max(1, perWarp)), (long)_device.Multiprocessors * 8);
        long parts = perWarp > 0 ? blocks : (long)blocks * RowsPerBlock;   // the _v kernel sums its warps' rows: one a block
        using var partial = weight is null ? null : empty([parts, d], ScalarType.Float32, x.device);
        string Shapes() => $"x {Strided(x)}, dy {Strided(dy)}, weight {(weight is null ? "none" : TensorArgs.Describe(weight))}, cos {TensorArgs.Describe(cos)}";
        var kernel = perWarp > 0 ? (dtype == ScalarType.BFloat16 ? _backward16v : _backward32v) : (dtype == ScalarType.BFloat16 ? _backward16 : _backward32);
        KernelLaunch.Launch(kernel, (blocks, 1), (32, RowsPerBlock), Shapes,
            Arg.Ptr(px), Arg.Ptr(pw), Arg.Ptr(pcos), Arg.Ptr(psin), Arg.Ptr(pdy), Arg.Ptr(pdx),
            Arg.Ptr(partial is null ? 0 : TensorArgs.Pointer(partial, _device, op, "dw partial", ScalarType.Float32)),
            Arg.I64(rows), Arg.I32((int)x.shape[1]), Arg.I32((int)x.shape[2]), Arg.I32((int)d),
            Arg.I64(x.stride(0)), Arg.I64(x.stride(1)), Arg.I64(x.stride(2)),
            Arg.I64(dy.stride(0)), Arg.I64(dy.stride(1)), Arg.I64(dy.stride(2)), Arg.F32((float)eps));
        if (weight is null)
            return (dx, null);
        var dw = dwInto ?? empty_like(weight);
        KernelLaunch.Launch(dtype == ScalarType.BFloat16 ? _reduce16 : _reduce32, ((uint)((d + 31) / 32), 1), (32, 32), Shapes,
            Arg.Ptr(TensorArgs.Pointer(partial!, _device, op, "dw partial", ScalarType.Float32)),
            Arg.Ptr(TensorArgs.Pointer(dw, _device, op, "dw", dtype)),
            Arg.I64(parts), Arg.I32((int)d), Arg.I32(dwInto is null ? 0 : 1));
        return (dx, dwInto is null ? dw : null);
    }

    // QkPair in qkrotary.cu: x, w, dy, out, two pointers each
    const int PairX = 0, PairW = 2, PairDy = 4, PairOut = 6, PairSlots = 8;

    /// <summary>
    /// Whether <see cref="ForwardPair"/> takes q and k together: both as <see cref="Supports"/> takes them, bf16, of one shape
    /// and strides, both with a weight or neither, on the _v kernels (<see cref="Grouped"/>).
    /// </summary>
    public bool SupportsPair(Tensor q, Tensor k, Tensor? wq, Tensor? wk, Tensor cos, Tensor sin)
    {
        if (!Supports(q, wq, cos, sin) || !Supports(k, wk, cos, sin) || q.dtype != ScalarType.BFloat16 || k.dtype != q.dtype ||
            (wq is null) != (wk is null) || !q.shape.SequenceEqual(k.shape) || !q.stride().SequenceEqual(k.stride()))
            return false;
        long rows = q.numel() / q.shape[3];
        nint pcos = TensorMemory.Address(cos), psin = TensorMemory.Address(sin);
        nint pwq = wq is null ? 0 : TensorMemory.Address(wq), pwk = wk is null ? 0 : TensorMemory.Address(wk);
        return rows > 0 && Grouped(q, rows, TensorMemory.Address(q), pwq, pcos, psin) > 0 && Grouped(k, rows, TensorMemory.Address(k), pwk, pcos, psin) > 0;
    }

    /// <summary>q and k as <see cref="SupportsPair"/> takes them -> their y (contiguous), in one launch.</summary>
    public (Tensor Q, Tensor K) ForwardPair(Tensor q, Tensor k, Tensor? wq, Tensor? wk, double eps, Tensor cos, Tensor sin)
    {
        const string op = "qk-norm rotary forward (q and k)";
        var (yq, yk) = (empty(q.shape, q.dtype, q.device), empty(k.shape, k.dtype, k.device));
        long rows = q.numel() / q.shape[3];
        Span<ulong> table = stackalloc ulong[PairSlots];
        table.Clear();
        (table[PairX], table[PairX + 1]) = (Arg.Ptr(StridedPointer(q, op, "q", q.dtype)), Arg.Ptr(StridedPointer(k, op, "k", k.dtype)));
        if (wq is not null)
            (table[PairW], table[PairW + 1]) = (Arg.Ptr(TensorArgs.Pointer(wq, _device, op, "q weight", q.dtype)), Arg.Ptr(TensorArgs.Pointer(wk!, _device, op, "k weight", k.dtype)));
        (table[PairOut], table[PairOut + 1]) = (Arg.Ptr(TensorArgs.Pointer(yq, _device, op, "q y", q.dtype)), Arg.Ptr(TensorArgs.Pointer(yk, _device, op, "k y", k.dtype)));
        nint pcos = TensorArgs.Pointer(cos, _device, op, "cos", ScalarType.Float32), psin = TensorArgs.Pointer(sin, _device, op, "sin", ScalarType.Float32);
        int perWarp = Grouped(q, rows, (nint)table[PairX], (nint)table[PairW], pcos, psin, (nint)table[PairOut]);
        if (perWarp == 0 || Grouped(k, rows, (nint)table[PairX + 1], (nint)table[PairW + 1], pcos, psin, (nint)table[PairOut + 1]) != perWarp)
            throw new ArgumentException($"{op}: q {Strided(q)} and k {Strided(k)} do not fit the grouped kernel; SupportsPair should have refused them");
        long perBlock = RowsPerBlock * perWarp;
        uint blocks = (uint)Math.Min((rows + perBlock - 1) / perBlock, (long)_device.Multiprocessors * 16);
        KernelLaunch.LaunchWithTable(_forwardPair16v, (blocks, 2), (32, RowsPerBlock), 0, () => $"q {Strided(q)}, k {Strided(k)}, cos {TensorArgs.Describe(cos)}", table,
            Arg.Ptr(pcos), Arg.Ptr(psin), Arg.I64(rows), Arg.I32((int)q.shape[1]), Arg.I32((int)q.shape[2]), Arg.I32((int)q.shape[3]),
            Arg.I64(q.stride(0)), Arg.I64(q.stride(1)), Arg.I64(q.stride(2)), Arg.F32((float)eps));
        return (yq, yk);
    }

    /// <summary>
    /// The backward of <see cref="ForwardPair"/>: dq and dk (contiguous; written into <paramref name="outQ"/> and
    /// <paramref name="outK"/> when given, contiguous tensors of q's shape), and each weight's gradient added into its .grad
    /// (intoQ, intoK) where given, else returned.
    /// </summary>
    public (Tensor Dq, Tensor Dk, Tensor? Dwq, Tensor? Dwk) BackwardPair(Tensor q, Tensor k, Tensor? wq, Tensor? wk, double eps, Tensor cos, Tensor sin,
                                                                        Tensor dyq, Tensor dyk, Tensor? intoQ, Tensor? intoK, Tensor? outQ = null, Tensor? outK = null)
    {
        const string op = "qk-norm rotary backward (q and k)";
        long d = q.shape[3], rows = q.numel() / d;
        foreach (var o in new[] { outQ, outK })
            if (o is not null && (!o.is_contiguous() || !o.shape.SequenceEqual(q.shape) || o.dtype != q.dtype))
                throw new ArgumentException($"{op}: an output {TensorArgs.Describe(o)} must be contiguous and shaped as q {Strided(q)}");
        var (dq, dk) = (outQ?.alias() ?? empty(q.shape, q.dtype, q.device), outK?.alias() ?? empty(k.shape, k.dtype, k.device));
        if (!dyq.stride().SequenceEqual(dyk.stride())) (dyq, dyk) = (dyq.contiguous(), dyk.contiguous());   // one set of strides for both
        Span<ulong> table = stackalloc ulong[PairSlots];
        table.Clear();
        (table[PairX], table[PairX + 1]) = (Arg.Ptr(StridedPointer(q, op, "q", q.dtype)), Arg.Ptr(StridedPointer(k, op, "k", k.dtype)));
        if (wq is not null)
            (table[PairW], table[PairW + 1]) = (Arg.Ptr(TensorArgs.Pointer(wq, _device, op, "q weight", q.dtype)), Arg.Ptr(TensorArgs.Pointer(wk!, _device, op, "k weight", k.dtype)));
        (table[PairDy], table[PairDy + 1]) = (Arg.Ptr(StridedPointer(dyq, op, "dq", q.dtype)), Arg.Ptr(StridedPointer(dyk, op, "dk", k.dtype)));
        (table[PairOut], table[PairOut + 1]) = (Arg.Ptr(TensorArgs.Pointer(dq, _device, op, "q dx", q.dtype)), Arg.Ptr(TensorArgs.Pointer(dk, _device, op, "k dx", k.dtype)));
        nint pcos = TensorArgs.Pointer(cos, _device, op, "cos", ScalarType.Float32), psin = TensorArgs.Pointer(sin, _device, op, "sin", ScalarType.Float32);
        int perWarp = Grouped(q, rows, (nint)table[PairX], (nint)table[PairW], pcos, psin, (nint)table[PairOut]);
        bool fits = perWarp > 0 && Grouped(k, rows, (nint)table[PairX + 1], (nint)table[PairW + 1], pcos, psin, (nint)table[PairOut + 1]) == perWarp &&
                    Grouped(dyq, rows, (nint)table[PairDy]) > 0 && Grouped(dyk, rows, (nint)table[PairDy + 1]) > 0;
        if (!fits)
        {
            // a gradient the grouped kernel cannot read (misaligned): each on its own, as the single op does
            var (dxq, dwq) = Backward(q, wq, eps, cos, sin, dyq, intoQ);
            var (dxk, dwk) = Backward(k, wk, eps, cos, sin, dyk, intoK);
            if (outQ is not null) { dq.copy_(dxq); dxq.Dispose(); dxq = dq; } else dq.Dispose();
            if (outK is not null) { dk.copy_(dxk); dxk.Dispose(); dxk = dk; } else dk.Dispose();
            return (dxq, dxk, dwq, dwk);
        }
        uint blocks = (uint)Math.Min((rows + RowsPerBlock * perWarp - 1) / (RowsPerBlock * perWarp), (long)_device.Multiprocessors * 8);
        using var partial = wq is null ? null : empty([2, blocks, d], ScalarType.Float32, q.device);   // one row a block, q's then k's
        nint ppartial = partial is null ? 0 : TensorArgs.Pointer(partial, _device, op, "dw partial", ScalarType.Float32);
        string Shapes() => $"q {Strided(q)}, k {Strided(k)}, dq {Strided(dyq)}, cos {TensorArgs.Describe(cos)}";
        KernelLaunch.LaunchWithTable(_backwardPair16v, (blocks, 2), (32, RowsPerBlock), 0, Shapes, table,
            Arg.Ptr(pcos), Arg.Ptr(psin), Arg.Ptr(ppartial), Arg.I64(rows), Arg.I32((int)q.shape[1]), Arg.I32((int)q.shape[2]), Arg.I32((int)d),
            Arg.I64(q.stride(0)), Arg.I64(q.stride(1)), Arg.I64(q.stride(2)), Arg.I64(dyq.stride(0)), Arg.I64(dyq.stride(1)), Arg.I64(dyq.stride(2)), Arg.F32((float)eps));
        if (wq is null)
            return (dq, dk, null, null);
        var (dwQ, dwK) = (intoQ is null ? empty_like(wq) : null, intoK is null ? empty_like(wk!) : null);
        Span<ulong> sets = stackalloc ulong[FusedRmsNorm.SetSlots];
        sets.Clear();
        sets[FusedRmsNorm.SetDw] = Arg.Ptr(TensorArgs.Pointer(intoQ ?? dwQ!, _device, op, "q dw", q.dtype));
        sets[FusedRmsNorm.SetDw + 1] = Arg.Ptr(TensorArgs.Pointer(intoK ?? dwK!, _device, op, "k dw", k.dtype));
        KernelLaunch.LaunchWithTable(_reduceSets16, ((uint)((d + 31) / 32), 2), (32, 32), 0, Shapes, sets,
            Arg.Ptr(ppartial), Arg.I64(blocks), Arg.I32((int)d), Arg.I32((intoQ is null ? 0 : 1) | (intoK is null ? 0 : 2)));
        return (dq, dk, dwQ, dwK);
    }

    /// <summary>
    /// Rows per warp of the _v kernels (a group of d/8 lanes per row), or 0 when they cannot run: d/2 must
    /// be 4 times a power of two up to 32, rows below 2³¹, the view's strides multiples of 4, the view's
    /// pointer (first) on 4 elements and the others on 16 bytes (fresh allocations and flat-buffer parameters are).
    /// </summary>
    internal static int Grouped(Tensor view, long rows, params ReadOnlySpan<nint> pointers)
    {
        long half = view.shape[3] / 2, lanes = half / 4;
        if (half % 4 != 0 || lanes is < 1 or > 32 || (lanes & (lanes - 1)) != 0 || rows >= int.MaxValue)
            return 0;
        for (int i = 0; i < 3; i++)
            if (view.stride(i) % 4 != 0) return 0;
        if (pointers[0] % (4 * (view.dtype == ScalarType.BFloat16 ? 2 : 4)) != 0)   // the view itself: 4 elements
            return 0;
        foreach (var p in pointers[1..])                                             // weight (0: none), tables, outputs
            if (p % 16 != 0) return 0;
        return (int)(32 / lanes);
    }

    /// <summary>The device address of a (B, T, H, d) view whose last stride is 1 (TensorArgs.Pointer wants contiguous tensors).</summary>
    nint StridedPointer(Tensor t, string op, string name, ScalarType dtype)
    {
        if (t.device_type != DeviceType.CUDA || t.device_index != _device.Index)
            throw new ArgumentException($"{op}: {name} {Strided(t)} is on {t.device}, the kernel runs on cuda:{_device.Index}");
        if (t.dtype != dtype)
            throw new ArgumentException($"{op}: {name} {Strided(t)} must be {dtype}");
        if (t.dim() != 4 || t.stride(3) != 1 || t.stride(0) < 0 || t.stride(1) < 0 || t.stride(2) < 0)
            throw new ArgumentException($"{op}: {name} {Strided(t)} must be (B, T, H, d) with unit stride over d");
        var p = TensorMemory.Address(t);   // data_ptr(): the storage offset included
        if (p == 0)
            throw new ArgumentException($"{op}: {name} {Strided(t)} has no data pointer");
        return p;
    }

    static string Strided(Tensor t) => $"{TensorArgs.Describe(t)} strides [{string.Join(", ", t.stride())}]";
}
