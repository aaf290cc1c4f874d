using DistTrain.Cuda;
using DistTrain.Model;
using DistTrain.Model.Kernels;
using DistTrain.Model.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training.Diagnostics;

/// <summary>
/// SwiGLU and QK-norm with rotary in `disttrain kernel-test`: as RMSNorm, fused and reference (same
/// dtype) against the reference in fp64; tolerance 1e-5 (fp32) and 1e-2 (bf16) of the fp64 output's
/// largest magnitude. Shapes: odd ones, a misaligned one (the kernel's scalar path), and the 405M
/// MUDDFormer's (8 × 2048 tokens; FFN widths 1408, 2816 and 4224 of layers 0, 11 and 23; 16 heads of
/// 64, q and k as views of one (B, T, 3, H, d) tensor or separate contiguous ones, the output
/// gradient a transposed (B, H, T, d) tensor as SDPA hands it back).
/// </summary>
public static partial class KernelSelfTest
{
    static readonly (long Rows, long H, bool Misaligned)[] SwiGluShapes =
    [
        (1, 1, false), (3, 7, false), (5, 1001, false), (2, 4099, true), (7, 64, true),
        (2048 * 8, 1408, false), (2048 * 8, 2816, false), (2048 * 8, 4224, false),
    ];

    // (B, T, H, d), q/k a view of a packed (B, T, 3, H, d) wqkv output, dy transposed from (B, H, T, d)
    static readonly (long B, long T, long H, long D, bool Packed, bool Transposed)[] QkShapes =
    [
        // d = 256: FusedQkRotary.MaxHeadDim
        (1, 1, 1, 2, false, false), (2, 3, 5, 6, true, false), (1, 7, 3, 130, false, true), (2, 5, 2, 256, true, true),
        (8, 2048, 16, 64, true, true), (8, 2048, 16, 64, false, true),
    ];

    static List<KernelCheck> SwiGluAndQkRotary(CudaKernels kernels, Device device)
    {
        var checks = new List<KernelCheck>();
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            foreach (var (rows, h, misaligned) in SwiGluShapes)
                checks.AddRange(SwiGlu(kernels, device, dtype, rows, h, misaligned));
            foreach (var shape in QkShapes)
                foreach (bool normed in new[] { true, false })
                    checks.AddRange(QkRotary(kernels, device, dtype, shape, normed));
        }
        foreach (var shape in QkPairShapes)
            foreach (bool normed in new[] { true, false })
                checks.AddRange(QkPair(kernels, device, shape, normed));
        return checks;
    }

    // q and k in one launch (bf16): the 405M head as Transformer++ (views of one packed wqkv output) and MUDDFormer (separate
    // contiguous tensors) have them, SDPA's transposed gradients; and a small d = 32
    static readonly (long B, long T, long H, long D, bool Packed, bool Transposed)[] QkPairShapes =
    [
        (8, 2048, 16, 64, true, true), (8, 2048, 16, 64, false, true), (3, 5, 7, 32, false, false),
    ];

    /// <summary>
    /// <see cref="IKernels.QkNormRotary(Tensor, Tensor, Tensor?, Tensor?, double, Tensor, Tensor)"/> fused (one launch) against
    /// fp64: both outputs, the input's gradient and both weights' (k's added into a preset .grad), tolerance 1e-2.
    /// </summary>
    static List<KernelCheck> QkPair(CudaKernels kernels, Device device, (long B, long T, long H, long D, bool Packed, bool Transposed) s, bool normed)
    {
        using var scope = NewDisposeScope();
        using var ten = tensor(10.0);
        var (cosAll, sinAll) = Rotary.Tables(s.T + 3, s.D, 10000, device);
        var (cos, sin) = (cosAll.narrow(0, 0, s.T), sinAll.narrow(0, 0, s.T));
        var bf = ScalarType.BFloat16;
        // packed: q and k are qkv[:, :, 0] and [:, :, 1]; else two contiguous (B, T, H, d) tensors stacked here for the test's own bookkeeping
        var x = randn(s.Packed ? [s.B, s.T, 3, s.H, s.D] : [2, s.B, s.T, s.H, s.D], ScalarType.Float32, device).to(bf);
        var ws = normed ? Enumerable.Range(0, 2).Select(_ => randn([s.D], ScalarType.Float32, device).div(ten).exp_().to(bf)).ToArray() : null;
        var dys = Enumerable.Range(0, 2).Select(_ => s.Transposed
            ? randn([s.B, s.H, s.T, s.D], ScalarType.Float32, device).to(bf).transpose(1, 2)
            : randn([s.B, s.T, s.H, s.D], ScalarType.Float32, device).to(bf)).ToArray();
        var g0 = randn([s.D], ScalarType.Float32, device).to(bf);
        (Tensor Q, Tensor K) Views(Tensor all) => s.Packed ? (all.select(2, 0), all.select(2, 1)) : (all[0], all[1]);
        var (q0, k0) = Views(x);
        if (!kernels.FusesQkPair(q0, k0, ws?[0], ws?[1], cos, sin))
            throw new InvalidOperationException($"qk-rotary pair: the fused kernels refused {s}");
        List<Tensor> Run(IKernels k, ScalarType dtype)
        {
            var xi = x.to(dtype).detach().requires_grad_(true);
            var wi = ws?.Select(w => w.to(dtype).detach().requires_grad_(true)).ToArray();
            if (wi is not null) wi[1].grad = g0.to(dtype).clone();   // a copy: to() returns g0 itself in bf16
            var (q, kk) = Views(xi);
            var (yq, yk) = k.QkNormRotary(q, kk, wi?[0], wi?[1], Eps, cos.to(ScalarType.Float32), sin.to(ScalarType.Float32));
            autograd.backward([yq, yk], dys.Select(g => g.to(dtype)).ToArray());
            return [yq.detach(), yk.detach(), xi.grad!, .. wi?.Select(w => w.grad!) ?? []];
        }
        var truth = Run(ReferenceKernels.Instance, ScalarType.Float64);
        var reference = Run(ReferenceKernels.Instance, bf);
        var fused = Run(kernels, bf);
        cuda.synchronize(device);
        string shape = $"{s.B}x{s.T}x{s.H}x{s.D}{(s.Packed ? "p" : "")}{(s.Transposed ? "t" : "")}";
        string[] outputs = normed ? ["yq", "yk", "dx", "dwq", "dwk+="] : ["yq", "yk", "dx"];
        return Compare(normed ? "qknorm_rotary_qk" : "rotary_qk", bf, shape, outputs, [.. fused], [.. reference], [.. truth]);
    }

    static List<KernelCheck> SwiGlu(CudaKernels kernels, Device device, ScalarType dtype, long rows, long h, bool misaligned)
    {
        using var scope = NewDisposeScope();
        // misaligned: a and b start one element into their buffers, so no 16-byte vectors
        Tensor Input() => randn([rows * h + (misaligned ? 1 : 0)], ScalarType.Float32, device).to(dtype).narrow(0, misaligned ? 1 : 0, rows * h).view(rows, h);
        var (a, b, dy) = (Input(), Input(), randn([rows, h], ScalarType.Float32, device).to(dtype));
        Tensor[] Run(IKernels k, Tensor a0, Tensor b0, Tensor g)
        {
            var (ai, bi) = (a0.detach().requires_grad_(true), b0.detach().requires_grad_(true));
            var y = k.SwiGlu(ai, bi);
            return [y.detach(), .. autograd.grad([y], [ai, bi], [g])];
        }
        var truth = Run(ReferenceKernels.Instance, a.to(ScalarType.Float64), b.to(ScalarType.Float64), dy.to(ScalarType.Float64));
        var reference = Run(ReferenceKernels.Instance, a, b, dy);
        var fused = Run(kernels, a, b, dy);
        cuda.synchronize(device);   // an asynchronous kernel error surfaces here, at its op
        return Compare("swiglu", dtype, $"{rows}x{h}{(misaligned ? "+1" : "")}", ["y", "da", "db"], fused, reference, truth);
    }

    static List<KernelCheck> QkRotary(CudaKernels kernels, Device device, ScalarType dtype, (long B, long T, long H, long D, bool Packed, bool Transposed) s, bool normed)
    {
        using var scope = NewDisposeScope();
        using var ten = tensor(10.0);
        var (cosAll, sinAll) = Rotary.Tables(s.T + 3, s.D, 10000, device);   // the model's block_size table, then its first T rows as the model passes them
        var (cos, sin) = (cosAll.narrow(0, 0, s.T), sinAll.narrow(0, 0, s.T));   // a longer table would broadcast in the reference
        // packed: x is k = qkv[:, :, 1] (strided, at an offset); else a contiguous (B, T, H, d)
        var x = randn(s.Packed ? [s.B, s.T, 3, s.H, s.D] : [s.B, s.T, s.H, s.D], ScalarType.Float32, device).to(dtype);
        var w = normed ? randn([s.D], ScalarType.Float32, device).div(ten).exp_().to(dtype) : null;
        var dy = s.Transposed
            ? randn([s.B, s.H, s.T, s.D], ScalarType.Float32, device).to(dtype).transpose(1, 2)
            : randn([s.B, s.T, s.H, s.D], ScalarType.Float32, device).to(dtype);
        Tensor[] Run(IKernels k, Tensor x0, Tensor? w0, Tensor g)
        {
            var xi = x0.detach().requires_grad_(true);
            var wi = w0?.detach().requires_grad_(true);
            var y = k.QkNormRotary(s.Packed ? xi.select(2, 1) : xi, wi, Eps, cos, sin);
            var inputs = wi is null ? new[] { xi } : new[] { xi, wi };
            return [y.detach(), .. autograd.grad([y], inputs, [g])];
        }
        var truth = Run(ReferenceKernels.Instance, x.to(ScalarType.Float64), w?.to(ScalarType.Float64), dy.to(ScalarType.Float64));
        var reference = Run(ReferenceKernels.Instance, x, w, dy);
        var fused = Run(kernels, x, w, dy);
        cuda.synchronize(device);
        string shape = $"{s.B}x{s.T}x{s.H}x{s.D}{(s.Packed ? "p" : "")}{(s.Transposed ? "t" : "")}";
        var checks = Compare(normed ? "qknorm_rotary" : "rotary", dtype, shape, normed ? ["y", "dx", "dw"] : ["y", "dx"], fused, reference, truth);
        if (!normed) return checks;
        // dw added into a preset .grad (the trainer's flat buffer view): by the fused reduce, by autograd's add in the reference
        Tensor AccumulatedDw(IKernels k, Tensor g0)
        {
            var xi = x.detach().requires_grad_(true);
            var wi = w!.detach().requires_grad_(true);
            wi.grad = g0.clone();
            k.QkNormRotary(s.Packed ? xi.select(2, 1) : xi, wi, Eps, cos, sin).backward([dy]);
            return wi.grad!.detach();
        }
        var g0 = randn([s.D], ScalarType.Float32, device).to(dtype);
        var truthSum = g0.to(ScalarType.Float64).Plus(truth[2]);
        checks.AddRange(Compare("qknorm_rotary", dtype, shape, ["dw+="], [AccumulatedDw(kernels, g0)], [AccumulatedDw(ReferenceKernels.Instance, g0)], [truthSum]));
        return checks;
    }

    static List<KernelCheck> Compare(string op, ScalarType dtype, string shape, string[] outputs, Tensor[] fused, Tensor[] reference, Tensor[] truth)
    {
        double tol = dtype == ScalarType.Float32 ? 1e-5 : 1e-2;
        var result = new List<KernelCheck>();
        for (int i = 0; i < outputs.Length; i++)
        {
            var (abs, rel) = Error(fused[i], truth[i]);
            result.Add(new KernelCheck(op, DtypeName(dtype), shape, outputs[i], abs, rel, Error(reference[i], truth[i]).Rel, tol));
        }
        return result;
    }
}
