using DistTrain.Cuda;
using DistTrain.Model;
using DistTrain.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training.Diagnostics;

/// <summary>
/// The MUDD mixing (<see cref="IKernels.Mix"/>): streams, the hiddens' gradients and the weights'
/// gradient, fused and reference (same dtype) both measured against the reference in fp64, as RMSNorm:
/// tolerance 1e-5 (fp32) and 1e-2 (bf16: one bf16 rounding of each output is 2^-9 relative).
/// DenseFormer's averages run the same kernels and are checked the same way. The reference average
/// rounds every partial sum to bf16 (a chain of multiply-adds), the fused one sums in fp32 once: its
/// bf16 error is the smaller; dalpha sums B·T per-token reductions (reference: in bf16 too).
/// </summary>
public static partial class KernelSelfTest
{
    static readonly (long B, long T, long D, int C, int L)[] MixShapes =
    [
        (1, 1, 7, 1, 2), (1, 3, 7, 4, 3), (3, 1, 1000, 4, 26), (1, 3, 1024, 1, 26),   // odd token counts and D; 1000: vectors, 1024: the 405M width
        (1, 3, 1001, 4, 3),                                                              // scalar columns, 1024 threads a token
        (2, 8192, 7, 4, 3), (4, 4096, 1000, 1, 2),                                       // B·T = 16384 with odd D
        (8, 2048, 1024, 4, 2), (8, 2048, 1024, 4, 26), (8, 2048, 1024, 1, 26),           // 405M: after layer 0, deep, and a one-stream last mix
    ];

    internal static List<KernelCheck> Mix(IKernels kernels, Device device, ScalarType dtype, (long B, long T, long D, int C, int L) s)
    {
        using var scope = NewDisposeScope();
        var hiddens = Enumerable.Range(0, s.L).Select(_ => randn([s.B, s.T, s.D], ScalarType.Float32, device).to(dtype)).ToArray();
        var dw = randn([s.C, s.B, s.T, s.L], ScalarType.Float32, device).to(dtype);
        var dy = Enumerable.Range(0, s.C).Select(_ => randn([s.B, s.T, s.D], ScalarType.Float32, device).to(dtype)).ToArray();
        if (kernels is CudaKernels cudaKernels && !cudaKernels.FusesMix(hiddens, dw))
            throw new InvalidOperationException($"mix: the fused kernels refused {s.L} hiddens of [{s.B}, {s.T}, {s.D}] {dtype} with {s.C} streams");
        var truth = RunMix(ReferenceKernels.Instance, [.. hiddens.Select(h => h.to(ScalarType.Float64))], dw.to(ScalarType.Float64), [.. dy.Select(g => g.to(ScalarType.Float64))]);
        var reference = RunMix(ReferenceKernels.Instance, hiddens, dw, dy);
        var fused = RunMix(kernels, hiddens, dw, dy);
        Synchronize(device);   // an asynchronous kernel error surfaces here, at its op
        double tol = dtype == ScalarType.Float32 ? 1e-5 : 1e-2;
        string shape = $"{s.B}x{s.T}x{s.D} C{s.C} L{s.L}", name = DtypeName(dtype);
        string[] outputs = ["streams", "dh", "ddw"];
        var result = new List<KernelCheck>();
        for (int i = 0; i < outputs.Length; i++)
        {
            var (abs, rel) = Error(fused[i], truth[i]);
            result.Add(new KernelCheck("mix", name, shape, outputs[i], abs, rel, Error(reference[i], truth[i]).Rel, tol));
        }
        return result;
    }

    /// <summary>
    /// Chains of mixes as in MUDDFormer's forward pass (mix k reads h_0..h_{k+1}; h_{k+2} is the sum of its
    /// streams; the last mix has one stream), backward through one <see cref="HiddenGradients"/>: the
    /// buffers, hand-overs and every other mix deferring its parts to the next. B, T, D, mixes.
    /// </summary>
    static readonly (long B, long T, long D, int Mixes)[] ChainShapes = [(1, 3, 7, 2), (2, 5, 1000, 5), (1, 3, 1001, 6), (8, 2048, 1024, 5), (2, 2048, 1024, 24)];   // the last: 405M's depth (L up to 25)

    /// <param name="normed">Every mix but the last (one stream) with sepln's Q, K, V norms fused in (<see cref="IKernels.MixNormed"/>):
    /// the deferring mixes hand on their streams' pre-norm gradients; the norm weights' gradients are an output too.</param>
    internal static List<KernelCheck> MixChain(IKernels kernels, Device device, ScalarType dtype, (long B, long T, long D, int Mixes) s, bool normed = false)
    {
        using var scope = NewDisposeScope();
        var hiddens = Enumerable.Range(0, 2).Select(_ => randn([s.B, s.T, s.D], ScalarType.Float32, device).to(dtype)).ToArray();
        // weights about 1/L so that the sums stay near 1 in magnitude along the chain
        var dws = Enumerable.Range(0, s.Mixes).Select(k => randn([k == s.Mixes - 1 ? 1 : 4, s.B, s.T, k + 2], ScalarType.Float32, device)
            .div_(Scalars.Of(4.0 * (k + 2))).to(dtype)).ToArray();
        // per normed mix three norm weights, about 1 ± 0.1 (none for the last)
        var norms = normed ? Enumerable.Range(0, 3 * (s.Mixes - 1)).Select(_ => randn([s.D], ScalarType.Float32, device).div_(Scalars.Of(10.0)).exp_().to(dtype)).ToArray() : [];
        var dy = randn([s.B, s.T, s.D], ScalarType.Float32, device).to(dtype);
        Tensor[] Run(IKernels k, Tensor[] hs, Tensor[] ws, Tensor[] ns, Tensor g, HiddenGradients? gradients)
        {
            var hi = hs.Select(h => h.detach().requires_grad_(true)).ToArray();
            var wi = ws.Select(w => w.detach().requires_grad_(true)).ToArray();
            var ni = ns.Select(w => w.detach().requires_grad_(true)).ToArray();
            var all = new List<Tensor>(hi);
            for (int m = 0; m < wi.Length; m++)
            {
                var streams = normed && m < wi.Length - 1 ? k.MixNormed(all, wi[m], gradients, ni[(3 * m)..(3 * m + 3)], Eps) : k.Mix(all, wi[m], gradients);
                var next = streams[0];
                for (int c = 1; c < streams.Length; c++) next = next.Plus(streams[c]);
                all.Add(next);
            }
            var grads = autograd.grad([all[^1]], [.. hi, .. wi, .. ni], [g]);
            if (gradients is { Held: > 0 })
                throw new InvalidOperationException($"mix chain: {gradients.Held} gradient buffers left after backward");
            Tensor[] outputs = [all[^1].detach(), stack(grads.Take(2)), cat(grads.Skip(2).Take(wi.Length).Select(t => t.flatten()).ToArray())];
            return normed ? [.. outputs, stack(grads.Skip(2 + wi.Length))] : outputs;
        }
        Tensor F64(Tensor t) => t.to(ScalarType.Float64);
        var truth = Run(ReferenceKernels.Instance, [.. hiddens.Select(F64)], [.. dws.Select(F64)], [.. norms.Select(F64)], F64(dy), null);
        var reference = Run(ReferenceKernels.Instance, hiddens, dws, norms, dy, new HiddenGradients());
        var fused = Run(kernels, hiddens, dws, norms, dy, new HiddenGradients());
        Synchronize(device);
        if (normed && kernels is CudaKernels cudaKernels && !cudaKernels.FusesMixNormed(hiddens, dws[0], norms[..3]))
            throw new InvalidOperationException($"mix_norm_chain: the fused kernels refused [{s.B}, {s.T}, {s.D}] {dtype}");
        return Compare(normed ? "mix_norm_chain" : "mix_chain", dtype, $"{s.B}x{s.T}x{s.D} {s.Mixes} mixes", normed ? ["out", "dh", "ddw", "dnorm_w"] : ["out", "dh", "ddw"], fused, reference, truth);
    }

    /// <summary>DenseFormer's depth-weighted average through the mix kernels (one stream, α shared by every token): B, T, D, inputs.</summary>
    static readonly (long B, long T, long D, int N)[] AverageShapes = [(1, 3, 7, 2), (3, 1, 1000, 5), (8, 2048, 1024, 13), (8, 2048, 1024, 25)];

    internal static List<KernelCheck> Average(IKernels kernels, Device device, ScalarType dtype, (long B, long T, long D, int N) s)
    {
        using var scope = NewDisposeScope();
        var hiddens = Enumerable.Range(0, s.N).Select(_ => randn([s.B, s.T, s.D], ScalarType.Float32, device).to(dtype)).ToArray();
        var alpha = randn([s.N], ScalarType.Float32, device).to(dtype);
        var dy = randn([s.B, s.T, s.D], ScalarType.Float32, device).to(dtype);
        Tensor[] Run(IKernels k, Tensor[] hs, Tensor a, Tensor g)
        {
            var hi = hs.Select(h => h.detach().requires_grad_(true)).ToArray();
            var ai = a.detach().requires_grad_(true);
            var y = k.DepthWeightedAverage(hi, ai);
            var grads = autograd.grad([y], [ai, .. hi], [g]);
            return [y.detach(), stack(grads.Skip(1)), grads[0]];
        }
        var truth = Run(ReferenceKernels.Instance, [.. hiddens.Select(h => h.to(ScalarType.Float64))], alpha.to(ScalarType.Float64), dy.to(ScalarType.Float64));
        var reference = Run(ReferenceKernels.Instance, hiddens, alpha, dy);
        var fused = Run(kernels, hiddens, alpha, dy);
        Synchronize(device);
        double tol = dtype == ScalarType.Float32 ? 1e-5 : 1e-2;
        string shape = $"{s.B}x{s.T}x{s.D} n{s.N}", name = DtypeName(dtype);
        string[] outputs = ["average", "dh", "dalpha"];
        var result = new List<KernelCheck>();
        for (int i = 0; i < outputs.Length; i++)
        {
            var (abs, rel) = Error(fused[i], truth[i]);
            result.Add(new KernelCheck("dwa", name, shape, outputs[i], abs, rel, Error(reference[i], truth[i]).Rel, tol));
        }
        return result;
    }

    /// <summary>The streams (C, B, T, D), the hiddens' gradients (L, B, T, D) and dw's gradient of one mix with output gradients dy.</summary>
    static Tensor[] RunMix(IKernels kernels, Tensor[] hiddens, Tensor dw, Tensor[] dy)
    {
        var hs = hiddens.Select(h => h.detach().requires_grad_(true)).ToArray();
        var w = dw.detach().requires_grad_(true);
        var streams = kernels.Mix(hs, w, gradients: null);
        var grads = autograd.grad(streams, [w, .. hs], dy);
        return [stack(streams.Select(t => t.detach())), stack(grads.Skip(1)), grads[0]];
    }
}

/// <summary>
/// The mix with sepln's Q, K, V norms fused in (<see cref="IKernels.MixNormed"/>), against the reference's mix then
/// three RMSNorms, both measured against that reference in fp64 as the plain mix: the normed streams and R, the hiddens'
/// gradients, dw's, the three norm weights' gradients, and those added into preset .grad tensors (the trainer's flat
/// buffer views, as the fused backward adds them). The mix chains run the same with every mix but the last normed.
/// </summary>
public static partial class KernelSelfTest
{
    // B, T, D, L (C = 4, N = 3): odd token counts and D, scalar columns, and the 405M shape from the first normed mix (L = 2) to past the deepest (L = 24)
    static readonly (long B, long T, long D, int L)[] MixNormShapes =
    [
        (1, 1, 7, 2), (1, 3, 7, 3), (3, 1, 1000, 26), (1, 3, 1024, 13), (1, 3, 1001, 3), (2, 5, 16, 4),
        (2, 8192, 7, 3), (4, 4096, 1000, 2),
        (8, 2048, 1024, 2), (8, 2048, 1024, 13), (8, 2048, 1024, 25),
    ];

    internal static List<KernelCheck> MixNorm(IKernels kernels, Device device, ScalarType dtype, (long B, long T, long D, int L) s)
    {
        using var scope = NewDisposeScope();
        const int c = 4, n = 3;
        var hiddens = Enumerable.Range(0, s.L).Select(_ => randn([s.B, s.T, s.D], ScalarType.Float32, device).to(dtype)).ToArray();
        var dw = randn([c, s.B, s.T, s.L], ScalarType.Float32, device).to(dtype);
        var norms = Enumerable.Range(0, n).Select(_ => randn([s.D], ScalarType.Float32, device).div_(Scalars.Of(10.0)).exp_().to(dtype)).ToArray();   // about 1 ± 0.1
        var dy = Enumerable.Range(0, c).Select(_ => randn([s.B, s.T, s.D], ScalarType.Float32, device).to(dtype)).ToArray();
        if (kernels is CudaKernels cudaKernels && !cudaKernels.FusesMixNormed(hiddens, dw, norms))
            throw new InvalidOperationException($"mix_norm: the fused kernels refused {s.L} hiddens of [{s.B}, {s.T}, {s.D}] {dtype} with {c} streams, {n} normed");
        Tensor F64(Tensor t) => t.to(ScalarType.Float64);
        var truth = RunMixNorm(ReferenceKernels.Instance, [.. hiddens.Select(F64)], F64(dw), [.. norms.Select(F64)], [.. dy.Select(F64)]);
        var reference = RunMixNorm(ReferenceKernels.Instance, hiddens, dw, norms, dy);
        var fused = RunMixNorm(kernels, hiddens, dw, norms, dy);
        Synchronize(device);   // an asynchronous kernel error surfaces here, at its op
        // the norm weights' gradients added into preset .grad tensors: by the fused reduce, by autograd's add in the reference
        var g0 = Enumerable.Range(0, n).Select(_ => randn([s.D], ScalarType.Float32, device).to(dtype)).ToArray();
        var truthSum = stack(g0.Select((g, i) => F64(g).Plus(truth[4][i])));
        var (accumulated, referenceAccumulated) = (AccumulatedNormDw(kernels, hiddens, dw, norms, dy, g0), AccumulatedNormDw(ReferenceKernels.Instance, hiddens, dw, norms, dy, g0));
        Synchronize(device);
        string shape = $"{s.B}x{s.T}x{s.D} L{s.L}";
        return Compare("mix_norm", dtype, shape, ["normed", "r", "dh", "ddw", "dnorm_w", "dnorm_w+="],
            [.. fused, accumulated], [.. reference, referenceAccumulated], [.. truth, truthSum]);
    }

    /// <summary>The normed streams (3, B, T, D), R, the hiddens' gradients (L, B, T, D), dw's and the norm weights' (3, D) of one normed mix.</summary>
    static Tensor[] RunMixNorm(IKernels kernels, Tensor[] hiddens, Tensor dw, Tensor[] norms, Tensor[] dy)
    {
        var hs = hiddens.Select(h => h.detach().requires_grad_(true)).ToArray();
        var w = dw.detach().requires_grad_(true);
        var ns = norms.Select(x => x.detach().requires_grad_(true)).ToArray();
        var streams = kernels.MixNormed(hs, w, gradients: null, ns, Eps);
        var grads = autograd.grad(streams, [w, .. ns, .. hs], dy);
        return [stack(streams.Take(3).Select(t => t.detach())), streams[3].detach(), stack(grads.Skip(1 + ns.Length)), grads[0], stack(grads.Skip(1).Take(ns.Length))];
    }

    /// <summary>The norm weights' .grad after one backward into preset <paramref name="g0"/>: g0 + dnorm_w, stacked (3, D).</summary>
    static Tensor AccumulatedNormDw(IKernels kernels, Tensor[] hiddens, Tensor dw, Tensor[] norms, Tensor[] dy, Tensor[] g0)
    {
        var hs = hiddens.Select(h => h.detach().requires_grad_(true)).ToArray();
        var ns = norms.Select(x => x.detach().requires_grad_(true)).ToArray();
        for (int i = 0; i < ns.Length; i++) ns[i].grad = g0[i].clone();
        var streams = kernels.MixNormed(hs, dw.detach().requires_grad_(true), gradients: null, ns, Eps);
        autograd.backward(streams, dy);
        return stack(ns.Select(x => x.grad!.detach()));
    }
}
