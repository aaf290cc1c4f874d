using DistTrain.Cuda;
using DistTrain.Model;
using DistTrain.Model.Kernels;
using static TorchSharp.torch;

namespace DistTrain.Training.Diagnostics;

/// <summary>
/// MUDDFormer's Q, K, V projections with the q/k norm-rotary pair (<see cref="IKernels.QkvRotary"/>): the inputs back to back
/// (as the sepln norms write them) and the weights and their .grad back to back (as the flat buffers hold them), so the
/// fused op runs its batched GEMMs; q, k, v, the inputs' gradients, the weights' gradients added into a preset .grad and the
/// norm weights', fused and reference (bf16) against the reference in fp64. Tolerance 1e-2 (bf16 GEMMs over D terms).
/// </summary>
public static partial class KernelSelfTest
{
    // B, T, heads, head dim, D: small (odd T), and the 405M attention (16 heads of 64, D = 1024)
    static readonly (long B, long T, int H, long Hd, long D)[] QkvShapes = [(2, 5, 2, 32, 48), (1, 7, 4, 64, 256), (8, 2048, 16, 64, 1024)];

    internal static List<KernelCheck> Qkv(IKernels kernels, Device device, (long B, long T, int H, long Hd, long D) s, bool normed)
    {
        using var scope = NewDisposeScope();
        var dtype = ScalarType.BFloat16;
        long inner = s.H * s.Hd;
        var x3 = randn([3, s.B, s.T, s.D], ScalarType.Float32, device).to(dtype);
        var w3 = randn([3, inner, s.D], ScalarType.Float32, device).div_(Scalars.Of(Math.Sqrt(s.D))).to(dtype);
        var g3 = randn([3, inner, s.D], ScalarType.Float32, device).to(dtype);   // the weights' preset .grad
        var norms = normed ? randn([2, s.Hd], ScalarType.Float32, device).div_(Scalars.Of(10.0)).exp_().to(dtype) : null;
        var (cos, sin) = Model.Layers.Rotary.Tables(s.T, s.Hd, 10000.0, device);
        var dy = Enumerable.Range(0, 3).Select(_ => randn([s.B, s.T, s.H, s.Hd], ScalarType.Float32, device).to(dtype)).ToArray();
        if (kernels is CudaKernels cuda)
        {
            using var probeW = w3.clone();
            if (!cuda.FusesQkv([x3[0], x3[1], x3[2]], [probeW[0], probeW[1], probeW[2]], s.H, norms?[0], norms?[1], cos, sin))
                throw new InvalidOperationException($"qkv: the fused op refused [{s.B}, {s.T}, {s.D}] with {s.H} heads of {s.Hd}");
        }
        Tensor F64(Tensor t) => t.to(ScalarType.Float64);
        var truth = RunQkv(ReferenceKernels.Instance, F64(x3), F64(w3), F64(g3), norms is null ? null : F64(norms), s.H, cos, sin, [.. dy.Select(F64)]);
        var reference = RunQkv(ReferenceKernels.Instance, x3, w3, g3, norms, s.H, cos, sin, dy);
        var fused = RunQkv(kernels, x3, w3, g3, norms, s.H, cos, sin, dy);
        Synchronize(device);   // an asynchronous kernel error surfaces here, at its op
        string shape = $"{s.B}x{s.T}x{s.D} {s.H}x{s.Hd}" + (normed ? "" : " (no norm)");
        string[] outputs = normed ? ["q", "k", "v", "dx", "dw+=", "dnorms"] : ["q", "k", "v", "dx", "dw+="];
        return Compare("qkv_rotary", dtype, shape, outputs, fused, reference, truth);
    }

    /// <summary>
    /// q, k, v, the three inputs' gradients, the weights' .grad after a backward into <paramref name="g3"/> and the norm weights'
    /// gradients, with inputs and weights (and .grad) as slices of one tensor each.
    /// </summary>
    static Tensor[] RunQkv(IKernels kernels, Tensor x3, Tensor w3, Tensor g3, Tensor? norms, int heads, Tensor cos, Tensor sin, Tensor[] dy)
    {
        var xs = x3.detach().clone().requires_grad_(true);
        var ws = w3.detach().clone();
        var grads = g3.detach().clone();
        var wi = Enumerable.Range(0, 3).Select(i => ws[i].requires_grad_(true)).ToArray();   // leaves: views of one buffer, as the trainer's
        for (int i = 0; i < 3; i++) wi[i].grad = grads[i];
        var ni = norms is null ? null : new[] { norms[0].detach().clone().requires_grad_(true), norms[1].detach().clone().requires_grad_(true) };
        var (q, k, v) = kernels.QkvRotary([xs[0], xs[1], xs[2]], wi, heads, ni?[0], ni?[1], Eps, cos, sin);
        autograd.backward([q, k, v], dy);
        var result = new List<Tensor> { q.detach(), k.detach(), v.detach(), xs.grad!.detach(), grads.detach() };
        if (ni is not null) result.Add(stack([ni[0].grad!, ni[1].grad!]));
        return [.. result];
    }
}
