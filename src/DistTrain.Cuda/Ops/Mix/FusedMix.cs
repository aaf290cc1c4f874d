using DistTrain.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Cuda.Ops.Mix;

/// <summary>
/// The MUDD multiway mixing as CUDA kernels (mix.cu beside this file): forward reads the L hiddens in
/// place through their addresses passed by value (no stack copy) and writes the C streams in one pass;
/// backward writes or adds each hidden's gradient (one pass over the hiddens and the streams'
/// gradients) and the weights' gradient as per-token reductions over D. fp32 inside, bf16 or fp32 in
/// and out, 16-byte loads where D and the addresses allow. A bias (C, L) shared by every token is added to the weights as they
/// are read (MUDDFormer's dense_bs; DenseFormer's α is a bias with no per-token part), and its gradient, a sum over the tokens,
/// is one more launch (<see cref="BiasGradient"/>). The reference is <see cref="Model.Layers.MixFunction"/>.
/// </summary>
internal sealed class FusedMix
{
    const string Source = "mix.cu";
    public const int MaxInputs = 64;    // MIX_MAX_INPUTS in mix.cu
    public const int MaxStreams = 4;    // MIX_MAX_STREAMS
    public const int MaxThreadsPerToken = 1024;          // scalar columns: __launch_bounds__(1024)
    public const int MaxVectorThreadsPerToken = 256;     // the _v kernels: __launch_bounds__(256)
    // MixTable<T>: h[MaxInputs], gh[MaxInputs], g[MaxStreams], out[MaxStreams], g2[MaxStreams], then the (stream, token)
    // strides of w, w2 and gw (two each; 0: contiguous), then the biases b and b2; 8 bytes each
    const int GhSlot = MaxInputs, GSlot = 2 * MaxInputs, OutSlot = 2 * MaxInputs + MaxStreams, G2Slot = 2 * MaxInputs + 2 * MaxStreams,
              WsSlot = 2 * MaxInputs + 3 * MaxStreams, W2sSlot = WsSlot + 2, GwsSlot = WsSlot + 4, BSlot = WsSlot + 6, B2Slot = WsSlot + 7;
    internal const int TableSlots = WsSlot + 8;
    internal const uint BiasBlock = 1024;   // MIX_BIAS_BLOCK in mix.cu: groups of C·L ≤ 256 threads, a column each

    readonly CudaDevice _device;
    readonly CudaFunction _forward32, _forward32V, _forward16, _forward16V, _backward32, _backward32V, _backward16, _backward16V;
    readonly CudaFunction _pending32, _pending32V, _pending16, _pending16V, _bias32, _bias16;
    readonly Tensor _counter;   // mix_bias_grad's count of finished blocks: one uint32, 0 between launches, kept for the process

    public FusedMix(CudaDevice device)
    {
        _device = device;
        var module = KernelModule.Get(device, Source);
        (_forward32, _forward32V) = (module.Function("mix_forward_f32"), module.Function("mix_forward_f32_v"));
        (_forward16, _forward16V) = (module.Function("mix_forward_bf16"), module.Function("mix_forward_bf16_v"));
        (_backward32, _backward32V) = (module.Function("mix_backward_f32"), module.Function("mix_backward_f32_v"));
        (_backward16, _backward16V) = (module.Function("mix_backward_bf16"), module.Function("mix_backward_bf16_v"));
        (_pending32, _pending32V) = (module.Function("mix_backward_p_f32"), module.Function("mix_backward_p_f32_v"));
        (_pending16, _pending16V) = (module.Function("mix_backward_p_bf16"), module.Function("mix_backward_p_bf16_v"));
        (_bias32, _bias16) = (module.Function("mix_bias_grad_f32"), module.Function("mix_bias_grad_bf16"));
        _counter = zeros([1], ScalarType.Int32, new Device(DeviceType.CUDA, device.Index));
        _counter.DetachFromDisposeScope();   // lives as long as this object, whatever scope creates it
    }

    /// <summary>Columns in one 16-byte vector of <paramref name="dtype"/>.</summary>
    static int VectorWidth(ScalarType dtype) => dtype == ScalarType.BFloat16 ? 8 : 4;

    /// <summary>
    /// What these kernels take: L ≤ 64 hiddens of one shape (B, T, D), fp32 or bf16, contiguous, on this
    /// device; dw (C, B, T, L) with C ≤ 4 on this device (any dtype and strides: it is converted), or null with a bias;
    /// a bias (C, L), or (L) for one stream, on this device (converted too), or null; D small enough for one chunk per
    /// thread: ≤ 1024 columns, or ≤ 256 vectors (bf16 D ≤ 2048, fp32 D ≤ 1024) with 16-byte aligned rows. Anything else
    /// runs the reference.
    /// </summary>
    public bool Supports(IReadOnlyList<Tensor> hiddens, Tensor? dw, Tensor? bias = null)
    {
        if (hiddens.Count is < 1 or > MaxInputs || (dw is null && bias is null))
            return false;
        var h0 = hiddens[0];
        if (h0.dim() != 3 || h0.dtype is not (ScalarType.Float32 or ScalarType.BFloat16))
            return false;
        long c = dw?.shape[0] ?? (bias!.dim() == 2 ? bias.shape[0] : 1);
        if (c is < 1 or > MaxStreams)
            return false;
        if (dw is not null && (dw.dim() != 4 || dw.shape[3] != hiddens.Count || dw.shape[1] != h0.shape[0] || dw.shape[2] != h0.shape[1] || !OnDevice(dw) || !dw.is_floating_point()))
            return false;
        if (bias is not null && (!OnDevice(bias) || !bias.is_floating_point() || !BiasShaped(bias, (int)c, hiddens.Count)))
            return false;
        foreach (var h in hiddens)
            if (!OnDevice(h) || h.dtype != h0.dtype || !h.is_contiguous() || h.dim() != 3 || h.shape[0] != h0.shape[0] || h.shape[1] != h0.shape[1] || h.shape[2] != h0.shape[2])
                return false;
        // one chunk per thread: scalar columns up to 1024, or vectors of 16 bytes when D and every row allow
        long d = h0.shape[2];
        int v = VectorWidth(h0.dtype);
        return d >= 1 && (d <= MaxThreadsPerToken || (d % v == 0 && d <= (long)MaxVectorThreadsPerToken * v && hiddens.All(TensorArgs.Aligned16)));
    }

    /// <summary>The address of weights the kernels read through <see cref="TokenStrides"/> (TensorArgs.Pointer wants contiguous tensors).</summary>
    nint StridedPointer(Tensor t, string op, string name, ScalarType dtype)
    {
        if (!OnDevice(t) || t.dtype != dtype)
            throw new ArgumentException($"{op}: {name} {TensorArgs.Describe(t)} must be {dtype} on cuda:{_device.Index}");
        return TensorMemory.Address(t);   // data_ptr(): the storage offset included
    }

    bool OnDevice(Tensor t) => t.device_type == DeviceType.CUDA && t.device_index == _device.Index;

    /// <summary>A bias for C streams over L hiddens: (C, L), or (L) when C = 1.</summary>
    internal static bool BiasShaped(Tensor bias, int c, int l) =>
        bias.dim() == 2 ? bias.shape[0] == c && bias.shape[1] == l : bias.dim() == 1 && c == 1 && bias.shape[0] == l;

    /// <summary>Threads per token (a multiple of 32 covering D in chunks of <paramref name="v"/>), tokens per block (≥ 256 threads a block).</summary>
    internal static (uint ThreadsPerToken, uint TokensPerBlock) Layout(long d, int v)
    {
        long chunks = (d + v - 1) / v;
        uint tpt = (uint)((chunks + 31) / 32 * 32);
        return (tpt, Math.Max(1u, 256u / tpt));
    }

    /// <summary>Whether every row of these tensors starts on 16 bytes (D a multiple of the vector width and 16-byte aligned bases).</summary>
    static bool Vectorizable(long d, ScalarType dtype, IEnumerable<nint> pointers) =>
        d % VectorWidth(dtype) == 0 && d <= (long)MaxVectorThreadsPerToken * VectorWidth(dtype) && pointers.All(p => p % 16 == 0);

    /// <summary>The launch shape for D; a D that <see cref="Supports"/> refuses (or a misaligned gradient) is a caller's bug.</summary>
    static (uint, uint) Checked(long d, int v, string op)
    {
        var layout = Layout(d, v);
        if (layout.ThreadsPerToken > MaxThreadsPerToken)
            throw new ArgumentException($"{op}: D = {d} needs 16-byte aligned rows (vectors of {v}) to fit {MaxThreadsPerToken} threads a token; Supports should have refused it");
        return layout;
    }

    /// <summary>
    /// The (stream, token) strides of weights (C, B, T, L) that the kernels read in place: unit stride over L, B and T
    /// mergeable into one token index, positive strides (the dynamic-dense output (B, T, C·L) seen as (C, B, T, L)); null:
    /// give the kernels a contiguous copy.
    /// </summary>
    internal static (long Stream, long Token)? TokenStrides(Tensor w) =>
        w.dim() == 4 && w.stride(3) == 1 && w.stride(0) > 0 && w.stride(2) > 0 && (w.shape[1] == 1 || w.stride(1) == w.shape[2] * w.stride(2))
            ? (w.stride(0), w.stride(2)) : null;

    static void SetStrides(Span<ulong> table, int slot, Tensor w, string op, string name)
    {
        var s = TokenStrides(w) ?? throw new ArgumentException($"{op}: {name} {TensorArgs.Describe(w)} strides [{string.Join(", ", w.stride())}] cannot be read in place; pass a contiguous copy");
        (table[slot], table[slot + 1]) = (Arg.I64(s.Stream), Arg.I64(s.Token));
    }

    uint Blocks(long tokens, uint perBlock) => (uint)Math.Min((tokens + perBlock - 1) / perBlock, (long)_device.Multiprocessors * 16);

    /// <summary>
    /// hiddens (B, T, D) each, w (C, B, T, L) in the hiddens' dtype, contiguous or as <see cref="TokenStrides"/> reads it, and/or
    /// b (C, L) contiguous in that dtype (added to every token's weights) -> C streams (B, T, D).
    /// </summary>
    public Tensor[] Forward(IReadOnlyList<Tensor> hiddens, Tensor? w, Tensor? b = null)
    {
        const string op = "mix forward";
        var h0 = hiddens[0];
        var dtype = h0.dtype;
        long d = h0.shape[2], tokens = h0.shape[0] * h0.shape[1];
        int c = Streams(w, b), l = hiddens.Count;
        var outs = Enumerable.Range(0, c).Select(_ => empty_like(h0)).ToArray();
        Span<ulong> table = stackalloc ulong[TableSlots];
        table.Clear();
        for (int j = 0; j < l; j++) table[j] = Arg.Ptr(TensorArgs.Pointer(hiddens[j], _device, op, $"h_{j}", dtype));
        for (int i = 0; i < c; i++) table[OutSlot + i] = Arg.Ptr(TensorArgs.Pointer(outs[i], _device, op, $"stream {i}", dtype));
        if (w is not null) SetStrides(table, WsSlot, w, op, "w");
        if (b is not null) table[BSlot] = Arg.Ptr(TensorArgs.Pointer(b, _device, op, "bias", dtype));
        bool vec = Vectorizable(d, dtype, [.. table[..l].ToArray().Select(p => (nint)p), .. table.Slice(OutSlot, c).ToArray().Select(p => (nint)p)]);
        int v = vec ? VectorWidth(dtype) : 1;
        var (tpt, tpb) = Checked(d, v, op);
        uint shared = tpb * (uint)(c * l) * sizeof(float);
        var f = dtype == ScalarType.BFloat16 ? (vec ? _forward16V : _forward16) : (vec ? _forward32V : _forward32);
        KernelLaunch.LaunchWithTable(f, (Blocks(tokens, tpb), 1), (tpt, tpb), shared,
            () => $"{l} hiddens {TensorArgs.Describe(h0)}, w {Describe(w)}, bias {Describe(b)}", table,
            Arg.Ptr(w is null ? 0 : StridedPointer(w, op, "w", dtype)), Arg.I64(tokens), Arg.I32(c), Arg.I32(l), Arg.I32((int)d));
        return outs;
    }

    /// <summary>The streams of weights w (C, B, T, L) or, without them, of a bias (C, L) or (L).</summary>
    static int Streams(Tensor? w, Tensor? b) => (int)(w?.shape[0] ?? (b!.dim() == 2 ? b.shape[0] : 1));

    static string Describe(Tensor? t) => t is null ? "none" : TensorArgs.Describe(t);

    /// <summary>
    /// grads: the C streams' gradients (B, T, D); targets: one (B, T, D) tensor per hidden that receives
    /// its gradient, added to where bit j of <paramref name="addMask"/> is set, else overwritten; only the
    /// hiddens of <paramref name="writeMask"/> are written (their targets; the others may be null).
    /// <paramref name="deferred"/>: a later mix's stream gradients and weights (C2, B, T, L2) whose parts
    /// for h_j (j &lt; L2) are added in the same pass. w and the deferred weights: contiguous or as <see cref="TokenStrides"/>
    /// reads them; b and the deferred bias B: (C, L) contiguous in the hiddens' dtype, or null. Returns the weights' gradient
    /// (C, B, T, L) in fp32, a view of a (B, T, C, L) tensor: the layout of the dynamic-dense output whose gradient it becomes,
    /// so that no copy is needed there (and the rows <see cref="BiasGradient"/> sums).
    /// </summary>
    public Tensor Backward(IReadOnlyList<Tensor> hiddens, Tensor? w, Tensor? b, IReadOnlyList<Tensor> grads, IReadOnlyList<Tensor?> targets, ulong addMask,
                           ulong writeMask, (IReadOnlyList<Tensor> Grads, Tensor W, Tensor? B)? deferred = null)
    {
        const string op = "mix backward";
        var h0 = hiddens[0];
        var dtype = h0.dtype;
        long d = h0.shape[2], tokens = h0.shape[0] * h0.shape[1];
        int c = Streams(w, b), l = hiddens.Count;
        int c2 = deferred is { } p ? (int)p.W.shape[0] : 0, l2 = deferred is { } q ? (int)q.W.shape[3] : 0;
        var gw = empty([h0.shape[0], h0.shape[1], c, l], ScalarType.Float32, h0.device).permute(2, 0, 1, 3);   // (C, B, T, L) view
        Span<ulong> table = stackalloc ulong[TableSlots];
        table.Clear();
        var rows = new List<nint>();
        for (int j = 0; j < l; j++)
        {
            table[j] = Arg.Ptr(TensorArgs.Pointer(hiddens[j], _device, op, $"h_{j}", dtype));
            rows.Add((nint)table[j]);
            if ((writeMask >> j & 1) == 0) continue;
            table[GhSlot + j] = Arg.Ptr(TensorArgs.Pointer(targets[j] ?? throw new ArgumentException($"{op}: h_{j} is to be written but has no target"), _device, op, $"gradient of h_{j}", dtype));
            rows.Add((nint)table[GhSlot + j]);
        }
        for (int i = 0; i < c; i++) rows.Add((nint)(table[GSlot + i] = Arg.Ptr(TensorArgs.Pointer(grads[i], _device, op, $"gradient of stream {i}", dtype))));
        for (int i = 0; i < c2; i++) rows.Add((nint)(table[G2Slot + i] = Arg.Ptr(TensorArgs.Pointer(deferred!.Value.Grads[i], _device, op, $"deferred gradient of stream {i}", dtype))));
        if (w is not null) SetStrides(table, WsSlot, w, op, "w");
        if (b is not null) table[BSlot] = Arg.Ptr(TensorArgs.Pointer(b, _device, op, "bias", dtype));
        if (deferred is { } dm) SetStrides(table, W2sSlot, dm.W, op, "deferred w");
        if (deferred is { B: { } b2 }) table[B2Slot] = Arg.Ptr(TensorArgs.Pointer(b2, _device, op, "deferred bias", dtype));
        (table[GwsSlot], table[GwsSlot + 1]) = (Arg.I64(gw.stride(0)), Arg.I64(gw.stride(2)));
        bool vec = Vectorizable(d, dtype, rows);
        int v = vec ? VectorWidth(dtype) : 1;
        var (tpt, tpb) = Checked(d, v, op);
        uint shared = ((tpb + tpb * (tpt / 32)) * (uint)(c * l) + tpb * (uint)(c2 * l2)) * sizeof(float);   // weights, per-warp partials of gw, deferred weights
        var f = (dtype == ScalarType.BFloat16, vec, c2 > 0) switch
        {
            (true, true, false) => _backward16V, (true, false, false) => _backward16, (false, true, false) => _backward32V, (false, false, false) => _backward32,
            (true, true, true) => _pending16V, (true, false, true) => _pending16, (false, true, true) => _pending32V, (false, false, true) => _pending32,
        };
        KernelLaunch.LaunchWithTable(f, (Blocks(tokens, tpb), 1), (tpt, tpb), shared,
            () => $"{l} hiddens {TensorArgs.Describe(h0)}, w {Describe(w)}, bias {Describe(b)}, add mask 0x{addMask:x}, write mask 0x{writeMask:x}" +
                  (deferred is { } e ? $", deferred w {TensorArgs.Describe(e.W)}, bias {Describe(e.B)}" : ""), table,
            Arg.Ptr(w is null ? 0 : StridedPointer(w, op, "w", dtype)), Arg.Ptr(TensorMemory.Address(gw)),
            Arg.I64(tokens), Arg.I32(c), Arg.I32(l), Arg.I32((int)d), addMask, writeMask,
            Arg.Ptr(deferred is { } f2 ? StridedPointer(f2.W, op, "deferred w", dtype) : 0), Arg.I32(c2), Arg.I32(l2));
        return gw;
    }

    /// <summary>
    /// From <paramref name="gw"/> (C, B, T, L) fp32 as <see cref="Backward"/> returns it: <paramref name="dbias"/> (C·L values,
    /// contiguous, the hiddens' dtype) ← (or += with <paramref name="accumulate"/>) Σ over the tokens, summed in fp32 in a fixed
    /// order and rounded once; and <paramref name="copy"/> (same shape and strides as gw, the hiddens' dtype), when given, ← gw.
    /// One pass over gw.
    /// </summary>
    public void BiasGradient(Tensor gw, Tensor? copy, Tensor dbias, bool accumulate)
    {
        const string op = "mix bias gradient";
        var dtype = dbias.dtype;
        long tokens = gw.shape[1] * gw.shape[2];
        int n = (int)(gw.shape[0] * gw.shape[3]);
        if (n > MaxInputs * MaxStreams || dbias.numel() != n)
            throw new ArgumentException($"{op}: {n} weights a token for a bias of {dbias.numel()} (at most {MaxInputs * MaxStreams})");
        if (copy is not null && (copy.dtype != dtype || !copy.stride().SequenceEqual(gw.stride()) || !copy.shape.SequenceEqual(gw.shape)))
            throw new ArgumentException($"{op}: the copy {TensorArgs.Describe(copy)} must be {dtype} in gw's layout");
        uint blocks = (uint)Math.Clamp((tokens + 63) / 64, 1, _device.Multiprocessors);   // one a multiprocessor; the last block sums that many partials
        using var partials = empty([blocks * n], ScalarType.Float32, gw.device);
        KernelLaunch.Launch(dtype == ScalarType.BFloat16 ? _bias16 : _bias32, (blocks, 1), (BiasBlock, 1),
            () => $"gw {TensorArgs.Describe(gw)}, bias {TensorArgs.Describe(dbias)}",
            Arg.Ptr(TensorMemory.Address(gw)), Arg.Ptr(copy is null ? 0 : TensorMemory.Address(copy)), Arg.I64(tokens), Arg.I32(n),
            Arg.Ptr(TensorArgs.Pointer(partials, _device, op, "partials", ScalarType.Float32)),
            Arg.Ptr(TensorArgs.Pointer(_counter, _device, op, "counter", ScalarType.Int32)),
            Arg.Ptr(TensorArgs.Pointer(dbias, _device, op, "bias gradient", dtype)), Arg.I32(accumulate ? 1 : 0));
    }
}
