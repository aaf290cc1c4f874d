using DistTrain.Cuda;
using DistTrain.Model;
using DistTrain.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training.Diagnostics;

/// <summary>
/// The chunked loss's cross-entropy in `disttrain kernel-test`: fused and reference (same dtype)
/// against the reference in fp64 on the same logits: each row's loss (tolerance 1e-5 of the largest
/// loss, both dtypes: the loss is computed in fp32 from the logits as given) and the gradient written
/// over the logits (1e-5 fp32, 1e-2 bf16), or the logits left as they were without a gradient.
/// Shapes: odd ones (V not a multiple of 8: the kernel's element path) and the 405M chunk (1280 rows
/// of V = 50432, with the whole batch's 16,384 tokens as the mean's count). Then the backward's
/// scaling of the saved gradients by the loss's incoming gradient, set or added (<see cref="Scale"/>).
/// </summary>
public static partial class KernelSelfTest
{
    static readonly (long Rows, long V, long MeanOver)[] CrossEntropyShapes =
    [
        (1, 1, 1), (3, 13, 3), (7, 1003, 20), (5, 1000, 5), (64, 8192, 64), (1280, 50432, 2048 * 8),
    ];

    static List<KernelCheck> CrossEntropy(CudaKernels kernels, Device device)
    {
        var checks = new List<KernelCheck>();
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            foreach (var (rows, v, meanOver) in CrossEntropyShapes)
                foreach (bool gradient in new[] { true, false })
                    checks.AddRange(CrossEntropy(kernels, device, dtype, rows, v, gradient ? meanOver : null));
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            foreach (long n in ScaleSizes)
                foreach (bool accumulate in new[] { false, true })
                    foreach (long offset in new long[] { 0, 1 })   // 1: misaligned, the element path
                        checks.Add(Scale(kernels, device, dtype, n, accumulate, offset));
        return checks;
    }

    // odd sizes, then the 405M output weight's gradient (50432 x 1024)
    static readonly long[] ScaleSizes = [1, 13, 1_000_003, 50432L * 1024];

    /// <summary>The backward's y = s·x (+ y): fused against fp64 on the same inputs, tolerance 1e-5 (fp32) and 1e-2 (bf16).</summary>
    static KernelCheck Scale(CudaKernels kernels, Device device, ScalarType dtype, long n, bool accumulate, long offset)
    {
        using var scope = NewDisposeScope();
        var x = randn([n + offset], ScalarType.Float32, device).to(dtype).narrow(0, offset, n);
        var y0 = randn([n + offset], ScalarType.Float32, device).to(dtype).narrow(0, offset, n);
        var s = tensor(0.37f, device: device);
        if (!kernels.FusesScaleGradient(y0, x, s))
            throw new InvalidOperationException($"cross-entropy gradient scale: the fused kernel refused {dtype} [{n}]");
        var truth = x.to(ScalarType.Float64).mul(s.to(ScalarType.Float64));
        if (accumulate) truth.PlusInPlace(y0.to(ScalarType.Float64));
        Tensor Run(IKernels k)
        {
            var y = y0.clone();
            k.ScaleGradient(y, x, s, accumulate);
            return y;
        }
        var reference = Run(ReferenceKernels.Instance);
        var fused = Run(kernels);
        cuda.synchronize(device);
        var (abs, rel) = Error(fused, truth);
        return new KernelCheck("ce_grad_scale", DtypeName(dtype), $"{n}{(offset > 0 ? "+1" : "")}", accumulate ? "y+=s*x" : "y=s*x",
            abs, rel, Error(reference, truth).Rel, dtype == ScalarType.Float32 ? 1e-5 : 1e-2);
    }

    static List<KernelCheck> CrossEntropy(CudaKernels kernels, Device device, ScalarType dtype, long rows, long v, long? meanOver)
    {
        using var scope = NewDisposeScope();
        using var four = tensor(4.0);
        var logits = randn([rows, v], ScalarType.Float32, device).mul_(four).to(dtype);   // logits of a trained model span about ±10
        var targets = randint(0, v, [rows], dtype: ScalarType.Int64, device: device);
        (Tensor Losses, Tensor Logits) Run(IKernels k, Tensor x, ScalarType lossDtype)
        {
            var (g, losses) = (x.clone(), empty([rows], lossDtype, device));
            k.CrossEntropyRows(g, targets, losses, meanOver);
            return (losses, g);
        }
        var losses32 = empty([rows], ScalarType.Float32, device);
        if (!kernels.FusesCrossEntropy(logits, targets, losses32))
            throw new InvalidOperationException($"cross-entropy: the fused kernel refused {dtype} logits [{rows}, {v}]");
        var truth = Run(ReferenceKernels.Instance, logits.to(ScalarType.Float64), ScalarType.Float64);
        var reference = Run(ReferenceKernels.Instance, logits, ScalarType.Float32);
        var fused = Run(kernels, logits, ScalarType.Float32);
        cuda.synchronize(device);
        string op = meanOver is null ? "cross_entropy_eval" : "cross_entropy", shape = $"{rows}x{v}", name = DtypeName(dtype);
        var result = new List<KernelCheck>();
        void Compare(string output, Tensor f, Tensor r, Tensor t, double tol)
        {
            var (abs, rel) = Error(f, t);
            result.Add(new KernelCheck(op, name, shape, output, abs, rel, Error(r, t).Rel, tol));
        }
        Compare("loss", fused.Losses, reference.Losses, truth.Losses, 1e-5);
        if (meanOver is not null) Compare("grad", fused.Logits, reference.Logits, truth.Logits, dtype == ScalarType.Float32 ? 1e-5 : 1e-2);
        else Compare("logits", fused.Logits, reference.Logits, logits, 0);   // untouched without a gradient
        return result;
    }
}
