using DistTrain.Cuda;
using DistTrain.Model;
using DistTrain.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training.Diagnostics;

/// <summary>
/// The residual add fused with the norm after it (<see cref="IKernels.AddRmsNorm"/>) in `disttrain
/// kernel-test`: the sum, the norm, both addends' gradients and dw, fused and reference (same dtype)
/// against the reference in fp64, as RMSNorm: tolerance 1e-5 (fp32) and 1e-2 (bf16). Besides the plain
/// case: b a view one element into its buffer (the kernels' scalar path), the sum's gradient a
/// transposed tensor (made contiguous), and the sum used by nothing but the norm (no dSum to add).
/// </summary>
public static partial class KernelSelfTest
{
    // the last: the 405M block's h (B, T, D) = (8, 2048, 1024); D = 1 left out as for RMSNorm
    static readonly long[][] AddNormShapes = [[1, 2], [3, 7], [5, 1000], [2, 1024], [3, 4096], [1, 8192], [8, 2048, 1024]];

    internal enum AddNormCase { Plain, Misaligned, StridedSumGrad, NormOnly }

    static List<KernelCheck> AddRmsNorms(CudaKernels kernels, Device device)
    {
        var checks = new List<KernelCheck>();
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            foreach (var shape in AddNormShapes)
            {
                foreach (bool scaled in new[] { true, false })
                    checks.AddRange(AddRmsNorm(kernels, device, dtype, shape, scaled, AddNormCase.Plain));
                foreach (var c in new[] { AddNormCase.Misaligned, AddNormCase.StridedSumGrad, AddNormCase.NormOnly })
                    checks.AddRange(AddRmsNorm(kernels, device, dtype, shape, scaled: true, c));
            }
        return checks;
    }

    internal static List<KernelCheck> AddRmsNorm(IKernels kernels, Device device, ScalarType dtype, long[] shape, bool scaled, AddNormCase c)
    {
        using var scope = NewDisposeScope();
        using var ten = tensor(10.0);
        long n = shape.Aggregate(1L, (p, s) => p * s), d = shape[^1];
        var a = randn(shape, ScalarType.Float32, device).to(dtype);
        var b = c == AddNormCase.Misaligned
            ? randn([n + 1], ScalarType.Float32, device).to(dtype).narrow(0, 1, n).view(shape)
            : randn(shape, ScalarType.Float32, device).to(dtype);
        var w = scaled ? randn([d], ScalarType.Float32, device).div(ten).exp_().to(dtype) : null;   // about 1 ± 0.1
        var dNormed = randn(shape, ScalarType.Float32, device).to(dtype);
        // the strided case: dSum as a transposed view of a tensor with its last two dimensions swapped
        long[] swapped = [.. shape[..^2], shape[^1], shape[^2]];
        Tensor? dSum = c switch
        {
            AddNormCase.NormOnly => null,
            AddNormCase.StridedSumGrad => randn(swapped, ScalarType.Float32, device).to(dtype).transpose(-1, -2),
            _ => randn(shape, ScalarType.Float32, device).to(dtype),
        };
        if (kernels is CudaKernels cudaKernels && !cudaKernels.FusesAddRmsNorm(a, b, w))
            throw new InvalidOperationException($"add_rmsnorm: the fused kernels refused [{string.Join(", ", shape)}] {dtype}");
        var truth = RunAddNorm(ReferenceKernels.Instance, a.to(ScalarType.Float64), b.to(ScalarType.Float64), w?.to(ScalarType.Float64), dSum?.to(ScalarType.Float64), dNormed.to(ScalarType.Float64));
        var reference = RunAddNorm(ReferenceKernels.Instance, a, b, w, dSum, dNormed);
        var fused = RunAddNorm(kernels, a, b, w, dSum, dNormed);
        Synchronize(device);   // an asynchronous kernel error surfaces here, at its op
        string op = scaled ? "add_rmsnorm" : "add_rmsnorm_noscale";
        string shapeName = string.Join("x", shape) + c switch { AddNormCase.Misaligned => "+1", AddNormCase.StridedSumGrad => "t", AddNormCase.NormOnly => "n", _ => "" };
        var checks = Compare(op, dtype, shapeName, scaled ? ["sum", "y", "da", "db", "dw"] : ["sum", "y", "da", "db"], fused, reference, truth);
        if (!scaled) return checks;
        // dw added into a preset .grad (the trainer's flat buffer view): by the fused reduce, by autograd's add in the reference
        Tensor AccumulatedDw(IKernels k, Tensor g0)
        {
            var (ai, bi, wi) = (a.detach().requires_grad_(true), b.detach().requires_grad_(true), w!.detach().requires_grad_(true));
            wi.grad = g0.clone();
            var (sum, y) = k.AddRmsNorm(ai, bi, wi, Eps);
            if (dSum is null) autograd.backward([y], [dNormed]);
            else autograd.backward([sum, y], [dSum, dNormed]);
            return wi.grad!.detach();
        }
        var g0 = randn([d], ScalarType.Float32, device).to(dtype);
        var truthSum = g0.to(ScalarType.Float64).Plus(truth[4]);
        checks.AddRange(Compare(op, dtype, shapeName, ["dw+="], [AccumulatedDw(kernels, g0)], [AccumulatedDw(ReferenceKernels.Instance, g0)], [truthSum]));
        return checks;
    }

    /// <summary>sum, y, da, db and (with a weight) dw of one AddRmsNorm with output gradients dSum (null: the sum unused) and dNormed.</summary>
    static Tensor[] RunAddNorm(IKernels kernels, Tensor a, Tensor b, Tensor? w, Tensor? dSum, Tensor dNormed)
    {
        var (ai, bi, wi) = (a.detach().requires_grad_(true), b.detach().requires_grad_(true), w?.detach().requires_grad_(true));
        var (sum, y) = kernels.AddRmsNorm(ai, bi, wi, Eps);
        var inputs = wi is null ? new[] { ai, bi } : new[] { ai, bi, wi };
        var grads = dSum is null ? autograd.grad([y], inputs, [dNormed]) : autograd.grad([sum, y], inputs, [dSum, dNormed]);
        return [sum.detach(), y.detach(), .. grads];
    }
}
