using DistTrain.Cuda.Ops.CrossEntropy;
using DistTrain.Cuda.Ops.QkRotary;
using DistTrain.Cuda.Ops.Mix;
using DistTrain.Cuda.Ops.RmsNorm;
using DistTrain.Cuda.Ops.SwiGlu;
using DistTrain.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Cuda;

/// <summary>
/// The fused implementation of <see cref="IKernels"/> on one CUDA device. Shapes or dtypes a kernel
/// does not take (fp64 gradient checks, D above 8192, a tensor on another device) run the
/// reference ops instead, so the model never needs to know.
/// </summary>
public sealed class CudaKernels : IKernels
{
    readonly FusedRmsNorm _rmsNorm;
    readonly FusedSwiGlu _swiGlu;
    readonly FusedQkRotary _qkRotary;
    readonly FusedMix _mix;
    readonly FusedCrossEntropy _crossEntropy;

    CudaKernels(CudaDevice device)
    {
        Device = device;
        _rmsNorm = new FusedRmsNorm(device);
        _swiGlu = new FusedSwiGlu(device);
        _qkRotary = new FusedQkRotary(device);
        _mix = new FusedMix(device);
        _crossEntropy = new FusedCrossEntropy(device);
    }

    /// <summary>
    /// Loads the driver and NVRTC, retains device <paramref name="deviceIndex"/>'s primary context and
    /// compiles (or loads from the cache) every kernel now, so that a failure shows at start.
    /// Throws <see cref="CudaUnavailableException"/> (libraries, device), <see cref="KernelCompileException"/> or <see cref="CudaException"/>.
    /// </summary>
    public static CudaKernels Create(int deviceIndex) => new(CudaDevice.Get(deviceIndex));

    public CudaDevice Device { get; }

    public string Name => "fused";

    /// <summary>"NVRTC 13.0 (path), CUDA driver (path), NVIDIA H200 sm_90": for the run's opening lines.</summary>
    public string Describe() =>
        $"{Device.Name} ({Device.Arch}, {Device.Multiprocessors} SMs), NVRTC {KernelCompiler.NvrtcVersion()} from {Native.CudaLibraries.NvrtcPath}, kernel cache {KernelCache.Directory()}";

    /// <summary>Why a compiled kernel could not be stored in the disk cache (null: none failed).</summary>
    public static string? CacheProblem => KernelCache.LastStoreProblem;

    public Tensor RmsNorm(Tensor x, Tensor? weight, double eps) =>
        _rmsNorm.Supports(x, weight) ? RmsNormFunction.Apply(_rmsNorm, x, weight, eps) : ReferenceKernels.Instance.RmsNorm(x, weight, eps);

    /// <summary>One launch each way for all of them where the kernels take them together, else each norm on its own.</summary>
    public Tensor[] RmsNorms(IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> weights, double eps) =>
        _rmsNorm.SupportsSets(xs, weights) ? RmsNormsFunction.Apply(_rmsNorm, xs, weights, eps) : xs.Select((x, i) => RmsNorm(x, weights[i], eps)).ToArray();

    /// <summary>Whether <see cref="RmsNorms"/> runs them in one launch (kernel-test checks it did).</summary>
    public bool FusesRmsNorms(IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> weights) => _rmsNorm.SupportsSets(xs, weights);

    /// <summary>Whether <see cref="AddRmsNorm"/> runs the fused kernels for these tensors (kernel-test checks it ran them).</summary>
    public bool FusesAddRmsNorm(Tensor a, Tensor b, Tensor? weight) => _rmsNorm.SupportsAdd(a, b, weight);

    public (Tensor Sum, Tensor Normed) AddRmsNorm(Tensor a, Tensor b, Tensor? weight, double eps) =>
        _rmsNorm.SupportsAdd(a, b, weight) ? AddRmsNormFunction.Apply(_rmsNorm, a, b, weight, eps) : ReferenceKernels.Instance.AddRmsNorm(a, b, weight, eps);

    public Tensor SwiGlu(Tensor a, Tensor b) =>
        _swiGlu.Supports(a, b) ? SwiGluFunction.Apply(_swiGlu, a, b) : ReferenceKernels.Instance.SwiGlu(a, b);

    public Tensor QkNormRotary(Tensor x, Tensor? weight, double eps, Tensor cos, Tensor sin) =>
        _qkRotary.Supports(x, weight, cos, sin) ? QkRotaryFunction.Apply(_qkRotary, x, weight, eps, cos, sin) : ReferenceKernels.Instance.QkNormRotary(x, weight, eps, cos, sin);

    public (Tensor Q, Tensor K) QkNormRotary(Tensor q, Tensor k, Tensor? qWeight, Tensor? kWeight, double eps, Tensor cos, Tensor sin) =>
        _qkRotary.SupportsPair(q, k, qWeight, kWeight, cos, sin) ? QkRotaryPairFunction.Apply(_qkRotary, q, k, qWeight, kWeight, eps, cos, sin)
            : (QkNormRotary(q, qWeight, eps, cos, sin), QkNormRotary(k, kWeight, eps, cos, sin));

    public (Tensor Q, Tensor K, Tensor V) QkvRotary(IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> ws, int heads, Tensor? qWeight, Tensor? kWeight,
                                                    double eps, Tensor cos, Tensor sin) =>
        FusesQkv(xs, ws, heads, qWeight, kWeight, cos, sin) ? QkvRotaryFunction.Apply(_qkRotary, xs, ws, heads, qWeight, kWeight, eps, cos, sin)
            : ReferenceKernels.QkvRotaryOf(this, xs, ws, heads, qWeight, kWeight, eps, cos, sin);

    /// <summary>
    /// Whether <see cref="QkvRotary"/> runs as batched GEMMs with the fused pair (kernel-test checks it did): three bf16 inputs
    /// (B, T, D) back to back on this device, three weights (H·d, D) back to back, and q/k of the pair kernels' shape.
    /// </summary>
    public bool FusesQkv(IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> ws, int heads, Tensor? qWeight, Tensor? kWeight, Tensor cos, Tensor sin)
    {
        if (xs.Count != 3 || ws.Count != 3 || heads < 1) return false;
        var (x0, w0) = (xs[0], ws[0]);
        if (x0.dim() != 3 || w0.dim() != 2 || x0.dtype != ScalarType.BFloat16 || w0.dtype != x0.dtype || w0.shape[1] != x0.shape[2] || w0.shape[0] % heads != 0 ||
            x0.device_type != DeviceType.CUDA || x0.device_index != Device.Index || w0.device_type != DeviceType.CUDA || w0.device_index != Device.Index)
            return false;
        using var x3 = QkvRotaryFunction.BackToBack(xs);
        using var w3 = QkvRotaryFunction.BackToBack(ws);
        if (x3 is null || w3 is null) return false;
        // the pair kernels read q and k as the first two (B, T, H, d) slabs of one fresh allocation: a probe of that shape (no kernel runs)
        using var probe = empty([2, x0.shape[0], x0.shape[1], heads, w0.shape[0] / heads], x0.dtype, x0.device);
        using var pq = probe[0];
        using var pk = probe[1];
        return _qkRotary.SupportsPair(pq, pk, qWeight, kWeight, cos, sin);
    }

    /// <summary>Whether the pair form of <see cref="QkNormRotary(Tensor, Tensor, Tensor?, Tensor?, double, Tensor, Tensor)"/> runs in one launch (kernel-test checks it did).</summary>
    public bool FusesQkPair(Tensor q, Tensor k, Tensor? qWeight, Tensor? kWeight, Tensor cos, Tensor sin) => _qkRotary.SupportsPair(q, k, qWeight, kWeight, cos, sin);

    /// <summary>Whether <see cref="Mix"/> runs the fused kernels for these tensors (kernel-test checks it ran them).</summary>
    public bool FusesMix(IReadOnlyList<Tensor> hiddens, Tensor dw, Tensor? bias = null) => _mix.Supports(hiddens, dw, bias);

    public Tensor[] Mix(IReadOnlyList<Tensor> hiddens, Tensor dw, Tensor? bias, HiddenGradients? gradients) =>
        _mix.Supports(hiddens, dw, bias) ? FusedMixFunction.Apply(_mix, hiddens, dw, bias, gradients) : ReferenceKernels.Instance.Mix(hiddens, dw, bias, gradients);

    /// <summary>
    /// The mix kernels with one stream whose weights are the bias α alone (read by every token): α's gradient, per token from
    /// the kernel, is summed over the tokens in fp32 and rounded once, into its .grad where it has one.
    /// </summary>
    public Tensor DepthWeightedAverage(IReadOnlyList<Tensor> hiddens, Tensor weights) =>
        _mix.Supports(hiddens, dw: null, weights) ? FusedMixFunction.Apply(_mix, hiddens, dw: null, weights, gradients: null)[0]
            : ReferenceKernels.Instance.DepthWeightedAverage(hiddens, weights);

    public void CrossEntropyRows(Tensor logits, Tensor targets, Tensor losses, long? meanOver)
    {
        if (_crossEntropy.Supports(logits, targets, losses)) _crossEntropy.Rows(logits, targets, losses, meanOver);
        else ReferenceKernels.Instance.CrossEntropyRows(logits, targets, losses, meanOver);
    }

    /// <summary>Whether <see cref="ScaleGradient"/> runs the fused kernel for these tensors (kernel-test checks it ran it).</summary>
    public bool FusesScaleGradient(Tensor y, Tensor x, Tensor scale) => _crossEntropy.SupportsScale(y, x, scale);

    public void ScaleGradient(Tensor y, Tensor x, Tensor scale, bool accumulate)
    {
        if (_crossEntropy.SupportsScale(y, x, scale)) _crossEntropy.Scale(y, x, scale, accumulate);
        else ReferenceKernels.Instance.ScaleGradient(y, x, scale, accumulate);
    }

    /// <summary>Whether <see cref="CrossEntropyRows"/> runs the fused kernel for these tensors (kernel-test checks it ran it).</summary>
    public bool FusesCrossEntropy(Tensor logits, Tensor targets, Tensor losses) => _crossEntropy.Supports(logits, targets, losses);
}
