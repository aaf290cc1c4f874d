using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Cuda.Ops.RmsNorm;

/// <summary>
/// RMSNorm as CUDA kernels (rmsnorm.cu beside this file): forward writes y and the per-row
/// rsqrt(mean(x²) + eps) that backward reuses; backward writes dx and, with a scale, per-block
/// fp32 partial sums of dy·x̂ that a second kernel reduces to dw. One read of x per pass, fp32
/// inside, bf16 or fp32 in and out. The same kernels fuse the residual add before a norm
/// (<see cref="AddForward"/>, and the sum's own gradient added to dx in <see cref="Backward"/>). The
/// references are <see cref="Model.Kernels.ReferenceKernels.RmsNorm"/> and <see cref="Model.Kernels.ReferenceKernels.AddRmsNorm"/>.
/// </summary>
internal sealed class FusedRmsNorm
{
    const string Source = "rmsnorm.cu";
    const int MaxColumnsPerThread = 8;   // MAXC in rmsnorm.cu
    public const int MaxDim = 1024 * MaxColumnsPerThread;

    readonly CudaDevice _device;
    readonly CudaFunction _forward32, _forward16, _backward32, _backward16, _reduce32, _reduce16, _forwardRows16, _backwardRows16;
    readonly CudaFunction _forwardSets16, _backwardSets16, _reduceSets16;

    public FusedRmsNorm(CudaDevice device)
    {
        _device = device;
        var module = KernelModule.Get(device, Source);
        (_forward32, _forward16) = (module.Function("rmsnorm_forward_f32"), module.Function("rmsnorm_forward_bf16"));
        (_backward32, _backward16) = (module.Function("rmsnorm_backward_f32"), module.Function("rmsnorm_backward_bf16"));
        (_reduce32, _reduce16) = (module.Function("rmsnorm_dw_reduce_f32"), module.Function("rmsnorm_dw_reduce_bf16"));
        (_forwardRows16, _backwardRows16) = (module.Function("rmsnorm_forward_rows_bf16"), module.Function("rmsnorm_backward_rows_bf16"));
        (_forwardSets16, _backwardSets16) = (module.Function("rmsnorm_forward_rows_sets_bf16"), module.Function("rmsnorm_backward_rows_sets_bf16"));
        _reduceSets16 = module.Function("rmsnorm_dw_reduce_sets_bf16");
    }

    public CudaDevice Device => _device;

    /// <summary>What these kernels take: fp32 or bf16 on this device, D ≤ 8192, a weight of x's dtype. Anything else runs the reference.</summary>
    public bool Supports(Tensor x, Tensor? weight) =>
        x.device_type == DeviceType.CUDA && x.device_index == _device.Index &&
        x.dtype is ScalarType.Float32 or ScalarType.BFloat16 && x.dim() >= 1 && x.shape[^1] is > 0 and <= MaxDim &&
        (weight is null || (weight.dtype == x.dtype && weight.dim() == 1 && weight.shape[0] == x.shape[^1] && weight.device_index == x.device_index && weight.device_type == DeviceType.CUDA));

    /// <summary>What <see cref="AddForward"/> takes: a as <see cref="Supports"/>, b of a's shape, dtype and device (no broadcasting).</summary>
    public bool SupportsAdd(Tensor a, Tensor b, Tensor? weight) =>
        Supports(a, weight) && b.dtype == a.dtype && b.shape.SequenceEqual(a.shape) && b.device_type == a.device_type && b.device_index == a.device_index;

    /// <summary>Threads per row (a power of two, 32..1024, covering D with ≤ 8 columns each) and rows per block (≥ 256 threads a block).</summary>
    internal static (uint ThreadsPerRow, uint RowsPerBlock) Layout(long d)
    {
        uint tpr = 32;
        while (tpr * MaxColumnsPerThread < d) tpr *= 2;
        return (tpr, Math.Max(1u, 256u / tpr));
    }

    const int RowsWarps = 8;   // ROWS_WARPS in rmsnorm.cu

    /// <summary>
    /// Whether the warp-a-row kernels (rmsnorm_*_rows_bf16) take these rows: bf16, D a multiple of 256 up to 1024 (the
    /// model widths), whole 16-byte vectors (<paramref name="vec"/> from <see cref="Vectors"/>). Else the block-a-row kernels.
    /// </summary>
    internal static bool WarpRows(long d, ScalarType dtype, int vec) => dtype == ScalarType.BFloat16 && vec == 1 && d % 256 == 0 && d <= 1024;

    /// <summary>x (rows·D contiguous), weight (D) or null -> y like x, rstd (rows) fp32 when <paramref name="keepRstd"/>.</summary>
    public (Tensor Y, Tensor? Rstd) Forward(Tensor x, Tensor? weight, double eps, bool keepRstd)
    {
        var (y, rstd, _) = Launch(x, null, weight, eps, keepRstd);
        return (y, rstd);
    }

    /// <summary>
    /// a, b (rows·D contiguous, one dtype) -> Sum = a + b like a (fp32 math, rounded once to a's dtype, as
    /// a plain add), Y = RMSNorm(Sum) and its rstd: one launch, reading a and b once.
    /// </summary>
    public (Tensor Sum, Tensor Y, Tensor? Rstd) AddForward(Tensor a, Tensor b, Tensor? weight, double eps, bool keepRstd)
    {
        var (y, rstd, sum) = Launch(a, b, weight, eps, keepRstd);
        return (sum!, y, rstd);
    }

    /// <summary>The forward kernel; with <paramref name="residual"/> it norms x + residual and returns that sum too.</summary>
    (Tensor Y, Tensor? Rstd, Tensor? Sum) Launch(Tensor x, Tensor? residual, Tensor? weight, double eps, bool keepRstd)
    {
        const string op = "rmsnorm forward";
        long d = x.shape[^1], rows = x.numel() / d;
        var dtype = x.dtype;
        var y = empty_like(x);
        var sum = residual is null ? null : empty_like(x);
        var rstd = keepRstd ? empty([rows], ScalarType.Float32, x.device) : null;
        nint px = TensorArgs.Pointer(x, _device, op, "x", dtype), pw = weight is null ? 0 : TensorArgs.Pointer(weight, _device, op, "weight", dtype),
             py = TensorArgs.Pointer(y, _device, op, "y", dtype),
             pres = residual is null ? 0 : TensorArgs.Pointer(residual, _device, op, "residual", dtype),
             psum = sum is null ? 0 : TensorArgs.Pointer(sum, _device, op, "sum", dtype),
             prstd = rstd is null ? 0 : TensorArgs.Pointer(rstd, _device, op, "rstd", ScalarType.Float32);
        string Shapes() => $"x {TensorArgs.Describe(x)}, residual {(residual is null ? "none" : TensorArgs.Describe(residual))}, weight {(weight is null ? "none" : TensorArgs.Describe(weight))}";
        int vec = Vectors(d, dtype, px, pres, psum, pw, py);
        if (WarpRows(d, dtype, vec))
        {
            uint warpBlocks = (uint)Math.Min((rows + RowsWarps - 1) / RowsWarps, (long)_device.Multiprocessors * 8);
            KernelLaunch.Launch(_forwardRows16, (warpBlocks, 1), (RowsWarps * 32, 1), Shapes,
                Arg.Ptr(px), Arg.Ptr(pres), Arg.Ptr(psum), Arg.Ptr(pw), Arg.Ptr(py), Arg.Ptr(prstd), Arg.I64(rows), Arg.I32((int)d), Arg.F32((float)eps));
            return (y, rstd, sum);
        }
        var (tpr, rpb) = Layout(d);
        uint blocks = (uint)Math.Min((rows + rpb - 1) / rpb, (long)_device.Multiprocessors * 16);
        KernelLaunch.Launch(dtype == ScalarType.BFloat16 ? _forward16 : _forward32, (blocks, 1), (tpr, rpb), Shapes,
            Arg.Ptr(px), Arg.Ptr(pres), Arg.Ptr(psum), Arg.Ptr(pw), Arg.Ptr(py), Arg.Ptr(prstd),
            Arg.I64(rows), Arg.I32((int)d), Arg.F32((float)eps), Arg.I32(vec));
        return (y, rstd, sum);
    }

    /// <summary>
    /// dy like x -> dx like x, and dw (D, weight's dtype) when there is a weight; with <paramref name="dwInto"/>
    /// (the weight's .grad, contiguous, of its dtype) dw is added into it instead and Dw is null. With
    /// <paramref name="dSum"/> (like x, contiguous: the gradient that the fused add's sum x receives directly)
    /// dx = dSum + the norm's gradient, in the same pass.
    /// </summary>
    public (Tensor Dx, Tensor? Dw) Backward(Tensor x, Tensor? weight, Tensor rstd, Tensor dy, Tensor? dwInto = null, Tensor? dSum = null)
    {
        const string op = "rmsnorm backward";
        long d = x.shape[^1], rows = x.numel() / d;
        var dtype = x.dtype;
        var dx = empty_like(x);
        string Shapes() => $"x {TensorArgs.Describe(x)}, dy {TensorArgs.Describe(dy)}, dsum {(dSum is null ? "none" : TensorArgs.Describe(dSum))}, weight {(weight is null ? "none" : TensorArgs.Describe(weight))}";
        nint px = TensorArgs.Pointer(x, _device, op, "x", dtype), pw = weight is null ? 0 : TensorArgs.Pointer(weight, _device, op, "weight", dtype),
             pdy = TensorArgs.Pointer(dy, _device, op, "dy", dtype), pdx = TensorArgs.Pointer(dx, _device, op, "dx", dtype),
             pdres = dSum is null ? 0 : TensorArgs.Pointer(dSum, _device, op, "dsum", dtype),
             prstd = TensorArgs.Pointer(rstd, _device, op, "rstd", ScalarType.Float32);
        int vec = Vectors(d, dtype, px, pw, pdy, pdres, pdx);
        bool warpRows = WarpRows(d, dtype, vec);
        var (tpr, rpb) = warpRows ? (RowsWarps * 32u, 1u) : Layout(d);
        long rowsPerBlock = warpRows ? RowsWarps : rpb;   // rows a block works on at once
        // few enough blocks that the partial rows stay small (parts x D fp32), enough to fill the GPU; the warp-a-row
        // kernel keeps one partial row a block, the others one a row of threads
        uint blocks = (uint)Math.Min((rows + rowsPerBlock - 1) / rowsPerBlock, (long)_device.Multiprocessors * 4);
        long parts = warpRows ? blocks : (long)blocks * rpb;
        using var partial = weight is null ? null : empty([parts, d], ScalarType.Float32, x.device);
        nint ppartial = partial is null ? 0 : TensorArgs.Pointer(partial, _device, op, "dw partial", ScalarType.Float32);
        if (warpRows)
            KernelLaunch.Launch(_backwardRows16, (blocks, 1), (tpr, rpb), Shapes,
                Arg.Ptr(px), Arg.Ptr(pw), Arg.Ptr(pdy), Arg.Ptr(pdres), Arg.Ptr(prstd), Arg.Ptr(pdx), Arg.Ptr(ppartial), Arg.I64(rows), Arg.I32((int)d));
        else
            KernelLaunch.Launch(dtype == ScalarType.BFloat16 ? _backward16 : _backward32, (blocks, 1), (tpr, rpb), Shapes,
                Arg.Ptr(px), Arg.Ptr(pw), Arg.Ptr(pdy), Arg.Ptr(pdres), Arg.Ptr(prstd), Arg.Ptr(pdx), Arg.Ptr(ppartial),
                Arg.I64(rows), Arg.I32((int)d), Arg.I32(vec));
        if (weight is null || (parts == 0 && dwInto is not null))
            return (dx, null);   // no rows: nothing to add
        var dw = dwInto ?? empty_like(weight);
        if (parts == 0)
        {
            dw.zero_();   // no rows: nothing to reduce
            return (dx, dw);
        }
        KernelLaunch.Launch(dtype == ScalarType.BFloat16 ? _reduce16 : _reduce32, ((uint)((d + 31) / 32), 1), (32, 32), Shapes,
            Arg.Ptr(TensorArgs.Pointer(partial!, _device, op, "dw partial", ScalarType.Float32)),
            Arg.Ptr(TensorArgs.Pointer(dw, _device, op, "dw", dtype)),
            Arg.I64(parts), Arg.I32((int)d), Arg.I32(dwInto is null ? 0 : 1));
        return (dx, dwInto is null ? dw : null);
    }

    public const int MaxSets = 3;   // NORM_SETS in rmsnorm.cu
    // NormSets: x, w, dy, out, rstd, dw, MaxSets pointers each
    internal const int SetX = 0, SetW = MaxSets, SetDy = 2 * MaxSets, SetOut = 3 * MaxSets, SetRstd = 4 * MaxSets, SetDw = 5 * MaxSets, SetSlots = 6 * MaxSets;

    /// <summary>
    /// Whether <see cref="ForwardSets"/> takes these: 2 or 3 norms of bf16 tensors of one shape on this device, each with a
    /// weight, rows the warp-a-row kernels take (D a multiple of 256 up to 1024), contiguous and 16-byte aligned.
    /// </summary>
    public bool SupportsSets(IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> weights)
    {
        if (xs.Count is < 2 or > MaxSets || weights.Count != xs.Count) return false;
        for (int i = 0; i < xs.Count; i++)
            if (!Supports(xs[i], weights[i]) || xs[i].dtype != ScalarType.BFloat16 || !xs[i].shape.SequenceEqual(xs[0].shape) ||
                !xs[i].is_contiguous() || !TensorArgs.Aligned16(xs[i]) || !TensorArgs.Aligned16(weights[i]))
                return false;
        return WarpRows(xs[0].shape[^1], ScalarType.BFloat16, 1);
    }

    /// <summary>
    /// xs (rows·D each, as <see cref="SupportsSets"/>), one weight each -> each y and its rstd, in one launch. The ys lie back
    /// to back in one allocation (slices of (n, ...)): the Q, K and V projections after MUDDFormer's sepln norms read them
    /// as one batched GEMM (<see cref="Model.Kernels.IKernels.QkvRotary"/>).
    /// </summary>
    public (Tensor[] Y, Tensor[] Rstd) ForwardSets(IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> weights, double eps)
    {
        const string op = "rmsnorm forward (sets)";
        long d = xs[0].shape[^1], rows = xs[0].numel() / d;
        using var stacked = empty([xs.Count, .. xs[0].shape], xs[0].dtype, xs[0].device);
        var ys = Enumerable.Range(0, xs.Count).Select(i => stacked[i]).ToArray();
        var rstds = xs.Select(x => empty([rows], ScalarType.Float32, x.device)).ToArray();
        Span<ulong> table = stackalloc ulong[SetSlots];
        table.Clear();
        for (int i = 0; i < xs.Count; i++)
        {
            table[SetX + i] = Arg.Ptr(TensorArgs.Pointer(xs[i], _device, op, $"x{i}", ScalarType.BFloat16));
            table[SetW + i] = Arg.Ptr(TensorArgs.Pointer(weights[i], _device, op, $"weight{i}", ScalarType.BFloat16));
            table[SetOut + i] = Arg.Ptr(TensorArgs.Pointer(ys[i], _device, op, $"y{i}", ScalarType.BFloat16));
            table[SetRstd + i] = Arg.Ptr(TensorArgs.Pointer(rstds[i], _device, op, $"rstd{i}", ScalarType.Float32));
        }
        uint blocks = (uint)Math.Min((rows + RowsWarps - 1) / RowsWarps, (long)_device.Multiprocessors * 8);
        KernelLaunch.LaunchWithTable(_forwardSets16, (blocks, (uint)xs.Count), (RowsWarps * 32, 1), 0, () => $"{xs.Count} x {TensorArgs.Describe(xs[0])}", table,
            Arg.I64(rows), Arg.I32((int)d), Arg.F32((float)eps));
        return (ys, rstds);
    }

    /// <summary>
    /// The backward of <see cref="ForwardSets"/>: dys like the xs (contiguous, 16-byte aligned) -> each dx, and each dw added
    /// into intos[i] (the weight's .grad) where it is given (Dw[i] null), else a new tensor. One launch, one reduce.
    /// </summary>
    public (Tensor[] Dx, Tensor?[] Dw) BackwardSets(IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> weights, IReadOnlyList<Tensor> rstds,
                                                     IReadOnlyList<Tensor> dys, IReadOnlyList<Tensor?> intos)
    {
        const string op = "rmsnorm backward (sets)";
        long d = xs[0].shape[^1], rows = xs[0].numel() / d;
        int n = xs.Count;
        var dxs = xs.Select(x => empty_like(x)).ToArray();
        var dws = new Tensor?[n];
        Span<ulong> table = stackalloc ulong[SetSlots];
        table.Clear();
        int accumulate = 0;
        for (int i = 0; i < n; i++)
        {
            if (!dys[i].shape.SequenceEqual(xs[i].shape) || !dys[i].is_contiguous() || !TensorArgs.Aligned16(dys[i]))
                throw new ArgumentException($"{op}: dy {i} must be contiguous, 16-byte aligned and shaped as x");
            table[SetX + i] = Arg.Ptr(TensorArgs.Pointer(xs[i], _device, op, $"x{i}", ScalarType.BFloat16));
            table[SetW + i] = Arg.Ptr(TensorArgs.Pointer(weights[i], _device, op, $"weight{i}", ScalarType.BFloat16));
            table[SetDy + i] = Arg.Ptr(TensorArgs.Pointer(dys[i], _device, op, $"dy{i}", ScalarType.BFloat16));
            table[SetOut + i] = Arg.Ptr(TensorArgs.Pointer(dxs[i], _device, op, $"dx{i}", ScalarType.BFloat16));
            table[SetRstd + i] = Arg.Ptr(TensorArgs.Pointer(rstds[i], _device, op, $"rstd{i}", ScalarType.Float32));
            if (intos[i] is null) dws[i] = empty_like(weights[i]);
            else accumulate |= 1 << i;
            table[SetDw + i] = Arg.Ptr(TensorArgs.Pointer(intos[i] ?? dws[i]!, _device, op, $"dw{i}", ScalarType.BFloat16));
        }
        string Shapes() => $"{n} x {TensorArgs.Describe(xs[0])}";
        uint blocks = (uint)Math.Min((rows + RowsWarps - 1) / RowsWarps, (long)_device.Multiprocessors * 4);
        if (blocks == 0)
        {
            foreach (var dw in dws) dw?.zero_();   // no rows: nothing to reduce (an existing .grad keeps its value)
            return (dxs, dws);
        }
        using var partial = empty([n, blocks, d], ScalarType.Float32, xs[0].device);   // one row a block, a set after another
        nint ppartial = TensorArgs.Pointer(partial, _device, op, "dw partial", ScalarType.Float32);
        KernelLaunch.LaunchWithTable(_backwardSets16, (blocks, (uint)n), (RowsWarps * 32, 1), 0, Shapes, table,
            Arg.Ptr(ppartial), Arg.I64(rows), Arg.I32((int)d));
        KernelLaunch.LaunchWithTable(_reduceSets16, ((uint)((d + 31) / 32), (uint)n), (32, 32), 0, Shapes, table,
            Arg.Ptr(ppartial), Arg.I64(blocks), Arg.I32((int)d), Arg.I32(accumulate));
        return (dxs, dws);
    }

    /// <summary>1 when rows are whole 16-byte vectors (D a multiple of 8 bf16 or 4 fp32) and every pointer (0: none) starts on 16 bytes.</summary>
    internal static int Vectors(long d, ScalarType dtype, params ReadOnlySpan<nint> pointers)
    {
        if (d % (dtype == ScalarType.BFloat16 ? 8 : 4) != 0) return 0;
        foreach (var p in pointers)
            if (p % 16 != 0) return 0;
        return 1;
    }
}
