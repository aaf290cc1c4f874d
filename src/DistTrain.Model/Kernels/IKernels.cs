using static TorchSharp.torch;

namespace DistTrain.Model.Kernels;

/// <summary>
/// The memory-bound operations the model calls by name. The model does not know which
/// implementation runs: <see cref="ReferenceKernels"/> (plain TorchSharp ops; the CPU and CI path,
/// and what the GPU tests compare against) or the fused CUDA kernels of DistTrain.Cuda, chosen by
/// the trainer (train.kernels) and set from outside through <see cref="LanguageModel.Kernels"/>.
/// </summary>
public interface IKernels
{
    /// <summary>A short name for the run's opening lines: "reference" or "fused".</summary>
    string Name { get; }

    /// <summary>
    /// RMSNorm over the last dimension: x (..., D), weight (D) or null (the no-scale norm of the
    /// dynamic-dense input) -> (..., D) in x's dtype; x · rsqrt(mean(x²) + eps) in fp32, then · weight.
    /// </summary>
    Tensor RmsNorm(Tensor x, Tensor? weight, double eps);

    /// <summary>
    /// Several scaled RMSNorms of tensors of one shape, each with its own weight: [<see cref="RmsNorm"/>(xs[i], weights[i], eps)].
    /// MUDDFormer's sepln norms of the Q, K and V streams; the fused kernels run them in one launch each way.
    /// </summary>
    Tensor[] RmsNorms(IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> weights, double eps);

    /// <summary>
    /// The residual add before a norm, with the norm: a, b (..., D) of one shape and dtype -> Sum = a + b
    /// (in a's dtype, rounded once, as a plain add) and Normed = <see cref="RmsNorm"/>(Sum, weight, eps).
    /// Backward: a and b both get dSum + the norm's gradient.
    /// </summary>
    (Tensor Sum, Tensor Normed) AddRmsNorm(Tensor a, Tensor b, Tensor? weight, double eps);

    /// <summary>SwiGLU's gate: a = w1(x), b = w3(x), both (..., H) -> silu(a) · b in a's dtype.</summary>
    Tensor SwiGlu(Tensor a, Tensor b);

    /// <summary>
    /// QK-norm then rotary, for q or k: x (B, T, H, d) (a view is fine), weight (d) (q_norm/k_norm) or null
    /// (use_qk_norm off: rotary alone), cos and sin (T', 1, d/2) fp32 with T' ≥ T ->
    /// <see cref="Layers.Rotary.Apply"/>(RMSNorm(x) · weight) as (B, T, H, d) in x's dtype.
    /// </summary>
    Tensor QkNormRotary(Tensor x, Tensor? weight, double eps, Tensor cos, Tensor sin);

    /// <summary>
    /// <see cref="QkNormRotary"/> of q and of k (each with its own weight, both or neither) as one op: the fused kernels run
    /// both in one launch each way.
    /// </summary>
    (Tensor Q, Tensor K) QkNormRotary(Tensor q, Tensor k, Tensor? qWeight, Tensor? kWeight, double eps, Tensor cos, Tensor sin);

    /// <summary>
    /// MUDDFormer's attention inputs from its separate Q, K and V streams: q, k, v = xs[i] · ws[i]ᵀ (xs (B, T, D) each; ws
    /// (H·d, D) each, the parameters themselves) viewed (B, T, H, d) with H = <paramref name="heads"/>, then
    /// <see cref="QkNormRotary(Tensor, Tensor, Tensor?, Tensor?, double, Tensor, Tensor)"/> of q and k. The fused kernels run
    /// the three products as one batched GEMM each way where the inputs lie back to back in memory (as <see cref="RmsNorms"/>
    /// writes them) and so do the weights and their .grad (the trainer's flat buffers).
    /// </summary>
    (Tensor Q, Tensor K, Tensor V) QkvRotary(IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> ws, int heads, Tensor? qWeight, Tensor? kWeight, double eps, Tensor cos, Tensor sin);
    /// <summary>
    /// The MUDD multiway mixing: hiddens h_0..h_{L-1} (each (B, T, D)), weights dw (C, B, T, L) and a bias
    /// (C, L) or null (the parameter dense_bs.{i}) -> C streams (B, T, D) in the hiddens' dtype,
    /// stream_c = Σ_j w[c, :, :, j] · h_j with w = dw + bias (the bias broadcast over the tokens, the sum in dw's
    /// dtype; w taken in the hiddens' dtype, fp32 accumulation). With <paramref name="gradients"/> (one per forward pass, whose
    /// mixes read growing prefixes h_0..h_{L-1}, L = 2, 3, ...) backward routes the hiddens' gradients
    /// through its in-place buffers (<see cref="HiddenGradients"/>); null: all go to autograd.
    /// </summary>
    Tensor[] Mix(IReadOnlyList<Tensor> hiddens, Tensor dw, Tensor? bias, HiddenGradients? gradients);

    /// <summary>
    /// DenseFormer's depth-weighted average: hiddens h_0..h_{n-1} (each (B, T, D)) and static weights
    /// α (n) -> Σ_j α_j · h_j (B, T, D) in the hiddens' dtype. The fused kernels run it as a mix with one
    /// stream and the same weights for every token.
    /// </summary>
    Tensor DepthWeightedAverage(IReadOnlyList<Tensor> hiddens, Tensor weights);

    /// <summary>
    /// Softmax cross-entropy of one chunk of the output projection: logits (c, V) in the compute dtype,
    /// targets (c) int64 -> each row's loss logsumexp(x) − x[target], computed in fp32 (fp64 for fp64
    /// logits), written into <paramref name="losses"/> (c). With <paramref name="meanOver"/> n, the logits
    /// are overwritten in place with the gradient of Σ losses / n, (softmax(x) − onehot(target)) / n, in
    /// their dtype. Not an autograd op: <see cref="Layers.ChunkedCrossEntropy"/> calls it inside its forward.
    /// </summary>
    void CrossEntropyRows(Tensor logits, Tensor targets, Tensor losses, long? meanOver);

    /// <summary>
    /// y ← scale · x, or y ← y + scale · x with <paramref name="accumulate"/>: x and y of one size and dtype (y may
    /// be x), scale a one-element tensor on their device, read there (the gradient a loss receives in backward:
    /// no host sync). fp32 math (fp64 for fp64), rounded once to y's dtype. <see cref="Layers.ChunkedCrossEntropy"/>'s backward.
    /// </summary>
    void ScaleGradient(Tensor y, Tensor x, Tensor scale, bool accumulate);
}

/// <summary>A module that calls <see cref="IKernels"/>; <see cref="LanguageModel.Kernels"/> sets them on every such submodule.</summary>
public interface IUsesKernels
{
    IKernels Kernels { get; set; }
}
