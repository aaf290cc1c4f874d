using DistTrain.Cuda;
using DistTrain.Model;
using DistTrain.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training.Diagnostics;

/// <summary>
/// The MUDD mixing (<see cref="IKernels.Mix"/>) with its bias (dense_bs): streams, the hiddens' gradients, the weights'
/// gradient and the bias's (a sum over the tokens; also added into a preset .grad, the trainer's flat buffer view),
/// fused and reference (same dtype) both measured against the reference in fp64, as RMSNorm:
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
        var bias = randn([s.C, s.L], ScalarType.Float32, device).to(dtype);
        var dy = Enumerable.Range(0, s.C).Select(_ => randn([s.B, s.T, s.D], ScalarType.Float32, device).to(dtype)).ToArray();
        var g0 = randn([s.C, s.L], ScalarType.Float32, device).to(dtype);   // the bias's preset .grad
        if (kernels is CudaKernels cudaKernels && !cudaKernels.FusesMix(hiddens, dw, bias))
            throw new InvalidOperationException($"mix: the fused kernels refused {s.L} hiddens of [{s.B}, {s.T}, {s.D}] {dtype} with {s.C} streams");
        Tensor F64(Tensor t) => t.to(ScalarType.Float64);
        var truth = RunMix(ReferenceKernels.Instance, [.. hiddens.Select(F64)], F64(dw), F64(bias), [.. dy.Select(F64)], F64(g0));
        var reference = RunMix(ReferenceKernels.Instance, hiddens, dw, bias, dy, g0);
        var fused = RunMix(kernels, hiddens, dw, bias, dy, g0);
        Synchronize(device);   // an asynchronous kernel error surfaces here, at its op
        double tol = dtype == ScalarType.Float32 ? 1e-5 : 1e-2;
        string shape = $"{s.B}x{s.T}x{s.D} C{s.C} L{s.L}", name = DtypeName(dtype);
        string[] outputs = ["streams", "dh", "ddw", "dbias", "dbias+="];
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
    static readonly (long B, long T, long D, int Mixes)[] ChainShapes = [(1, 3, 7, 2), (2, 5, 1000, 5), (1, 3, 1001, 6), (8, 2048, 1024, 5)];

    internal static List<KernelCheck> MixChain(IKernels kernels, Device device, ScalarType dtype, (long B, long T, long D, int Mixes) s)
    {
        using var scope = NewDisposeScope();
        var hiddens = Enumerable.Range(0, 2).Select(_ => randn([s.B, s.T, s.D], ScalarType.Float32, device).to(dtype)).ToArray();
        // weights about 1/L so that the sums stay near 1 in magnitude along the chain
        var dws = Enumerable.Range(0, s.Mixes).Select(k => randn([k == s.Mixes - 1 ? 1 : 4, s.B, s.T, k + 2], ScalarType.Float32, device)
            .div_(Scalars.Of(4.0 * (k + 2))).to(dtype)).ToArray();
        var biases = dws.Select(w => randn([w.shape[0], w.shape[3]], ScalarType.Float32, device).div_(Scalars.Of(4.0 * w.shape[3])).to(dtype)).ToArray();
        var dy = randn([s.B, s.T, s.D], ScalarType.Float32, device).to(dtype);
        Tensor[] Run(IKernels k, Tensor[] hs, Tensor[] ws, Tensor[] bs, Tensor g, HiddenGradients? gradients)
        {
            var hi = hs.Select(h => h.detach().requires_grad_(true)).ToArray();
            var wi = ws.Select(w => w.detach().requires_grad_(true)).ToArray();
            var bi = bs.Select(b => b.detach().requires_grad_(true)).ToArray();
            var all = new List<Tensor>(hi);
            for (int m = 0; m < wi.Length; m++)
            {
                var streams = k.Mix(all, wi[m], bi[m], gradients);
                var next = streams[0];
                for (int c = 1; c < streams.Length; c++) next = next.Plus(streams[c]);
                all.Add(next);
            }
            var grads = autograd.grad([all[^1]], [.. hi, .. wi, .. bi], [g]);
            if (gradients is { Held: > 0 })
                throw new InvalidOperationException($"mix chain: {gradients.Held} gradient buffers left after backward");
            return [all[^1].detach(), stack(grads.Take(2)), cat(grads.Skip(2).Take(wi.Length).Select(t => t.flatten()).ToArray()),
                    cat(grads.Skip(2 + wi.Length).Select(t => t.flatten()).ToArray())];
        }
        Tensor F64(Tensor t) => t.to(ScalarType.Float64);
        var truth = Run(ReferenceKernels.Instance, [.. hiddens.Select(F64)], [.. dws.Select(F64)], [.. biases.Select(F64)], F64(dy), null);
        var reference = Run(ReferenceKernels.Instance, hiddens, dws, biases, dy, new HiddenGradients());
        var fused = Run(kernels, hiddens, dws, biases, dy, new HiddenGradients());
        Synchronize(device);
        double tol = dtype == ScalarType.Float32 ? 1e-5 : 1e-2;
        string shape = $"{s.B}x{s.T}x{s.D} {s.Mixes} mixes", name = DtypeName(dtype);
        string[] outputs = ["out", "dh", "ddw", "dbias"];
        var result = new List<KernelCheck>();
        for (int i = 0; i < outputs.Length; i++)
        {
            var (abs, rel) = Error(fused[i], truth[i]);
            result.Add(new KernelCheck("mix_chain", name, shape, outputs[i], abs, rel, Error(reference[i], truth[i]).Rel, tol));
        }
        return result;
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

    /// <summary>
    /// The streams (C, B, T, D), the hiddens' gradients (L, B, T, D), dw's and the bias's gradients of one mix with output
    /// gradients dy; then the bias's .grad after a backward into a preset <paramref name="g0"/> (g0 + its gradient).
    /// </summary>
    static Tensor[] RunMix(IKernels kernels, Tensor[] hiddens, Tensor dw, Tensor bias, Tensor[] dy, Tensor g0)
    {
        var hs = hiddens.Select(h => h.detach().requires_grad_(true)).ToArray();
        var w = dw.detach().requires_grad_(true);
        var b = bias.detach().requires_grad_(true);
        var streams = kernels.Mix(hs, w, b, gradients: null);
        var grads = autograd.grad(streams, [w, b, .. hs], dy);
        var bi = bias.detach().requires_grad_(true);
        bi.grad = g0.clone();   // a copy: g0 itself would be added into
        autograd.backward(kernels.Mix(hs.Select(h => h.detach()).ToArray(), dw, bi, gradients: null), dy);
        return [stack(streams.Select(t => t.detach())), stack(grads.Skip(2)), grads[0], grads[1], bi.grad!.detach()];
    }
}
