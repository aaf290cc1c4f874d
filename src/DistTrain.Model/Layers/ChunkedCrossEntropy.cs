using System.Runtime.CompilerServices;
using DistTrain.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace DistTrain.Model.Layers;

/// <summary>
/// The output projection and the mean next-token cross-entropy fused into one custom autograd
/// function, over chunks of rows, so that the (N, V) logits never exist at once. Forward computes,
/// per chunk, the logits (compute dtype), the loss (fp32, via logsumexp) and at once the gradients
/// of the mean loss: g = (softmax − onehot) / N written over the logits (<see cref="IKernels.CrossEntropyRows"/>:
/// one kernel when fused), grad_h = g @ W, grad_W += gᵀ @ h. It keeps only grad_h (N, D) and grad_W
/// (V, D); backward scales them by the incoming gradient. Peak extra memory is one chunk's logits
/// (the reference adds their fp32 copy) instead of the whole batch's logits, their fp32 copy and
/// the softmax that autograd would keep.
/// grad_W is summed over the chunks inside their GEMMs (addmm_, beta = 1) in the compute dtype: in bf16 that
/// rounds the running sum once a chunk (4 chunks at the 405M shape) where the unchunked GEMM rounds once. Summing
/// in fp32 instead took a cast and a pass over three V·D fp32 tensors a chunk (0.9 ms of a 405M step's 106).
/// Backward adds grad_W times the incoming gradient straight into the weight's .grad where it has one
/// (<see cref="WeightGrad"/>, <see cref="IKernels.ScaleGradient"/>: one pass, no host sync).
/// Every target counts (no ignore index), as in the unchunked loss of the trainer.
/// </summary>
public sealed class ChunkedCrossEntropy : MultiTensorFunction<ChunkedCrossEntropy>
{
    const long ChunkBytes = 512L << 20;

    public override string Name => nameof(ChunkedCrossEntropy);

    /// <summary>
    /// Rows per chunk such that one chunk's logits in the compute dtype take about 512 MiB (at vocabulary
    /// 50432: 2624 rows in fp32, 5312 in bf16, whose fused loss keeps no fp32 copy), a multiple of 64 where that is at least 64.
    /// Each chunk adds its part of grad_W into the fp32 sum (a pass over V·D fp32): fewer, larger chunks cost less.
    /// </summary>
    public static int DefaultChunkRows(long vocabSize, int bytesPerLogit = 4)
    {
        long rows = Math.Max(1, ChunkBytes / (bytesPerLogit * vocabSize));
        return (int)Math.Min(rows >= 64 ? rows / 64 * 64 : rows, 1 << 30);
    }

    /// <summary>The rows each chunk takes: as many chunks as <paramref name="chunkRows"/> allows, of equal rows (a 5312-row budget over 16384 rows: 4 of 4096).</summary>
    public static long RowsPerChunk(long rows, long chunkRows)
    {
        if (rows <= 0) return chunkRows;
        long chunks = (rows + chunkRows - 1) / chunkRows;
        return (rows + chunks - 1) / chunks;
    }

    /// <summary>
    /// Mean cross-entropy of <paramref name="hidden"/> (..., D) projected by <paramref name="weight"/>
    /// (V, D) against <paramref name="targets"/> (...), computed <paramref name="chunkRows"/> rows at a
    /// time: a scalar in fp32 (fp64 for a fp64 model). Gradients flow to hidden and weight where they
    /// require grad and grad mode is on; otherwise none are computed. <paramref name="kernels"/> runs
    /// each chunk's softmax (the reference when null).
    /// </summary>
    public static Tensor Loss(Tensor hidden, Tensor weight, Tensor targets, long chunkRows, IKernels? kernels = null)
    {
        if (chunkRows < 1) throw new ArgumentOutOfRangeException(nameof(chunkRows), chunkRows, "rows per chunk must be at least 1");
        if (hidden.dtype != weight.dtype)
            throw new ArgumentException($"hidden is {hidden.dtype} but the output weight is {weight.dtype}; project in one compute dtype", nameof(hidden));
        ReturnedGradients.Release();
        using var scope = NewDisposeScope();
        var h = hidden.reshape(-1, hidden.shape[^1]);   // (..., D) -> (N, D)
        var t = targets.reshape(-1);                    // (...) -> (N)
        if (h.shape[0] != t.shape[0])
            throw new ArgumentException($"{h.shape[0]} hidden rows but {t.shape[0]} targets", nameof(targets));
        bool grad = is_grad_enabled();
        var loss = apply(h, weight, t, chunkRows, grad && h.requires_grad, grad && weight.requires_grad, kernels ?? ReferenceKernels.Instance)[0];
        // TorchSharp's node keeps an empty_like of each output: leaving this scope frees it
        return loss.MoveToOuterDisposeScope();
    }

    /// <summary>vars: h (N, D), W (V, D), targets (N) int64, rows per chunk, whether to compute grad_h, grad_W, the kernels.</summary>
    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var (h, w, targets) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2]);
        var (chunk, needH, needW, kernels) = ((long)vars[3], (bool)vars[4], (bool)vars[5], (IKernels)vars[6]);
        // apply already runs forward with grad off; explicit because the saving depends on it
        using var noGrad = no_grad();
        long n = h.shape[0], d = h.shape[1], v = w.shape[0];
        var lossDtype = h.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var lossSum = zeros([], lossDtype, h.device);
        var gradH = needH ? empty([n, d], h.dtype, h.device) : null;
        Tensor? gradW = null;   // the sum over chunks in the compute dtype, from the first chunk's product
        chunk = RowsPerChunk(n, chunk);
        for (long start = 0; start < n; start += chunk)
        {
            using var chunkScope = NewDisposeScope();
            long rows = Math.Min(chunk, n - start);
            var hc = h.narrow(0, start, rows);                                 // (c, D)
            var g = hc.mm(w.t());                                              // (c, V) compute dtype: the logits
            var losses = empty([rows], lossDtype, h.device);                   // (c)
            bool backward = needH || needW;
            // g becomes the gradient of the mean loss w.r.t. the logits: (softmax − onehot) / N
            kernels.CrossEntropyRows(g, targets.narrow(0, start, rows), losses, backward ? n : null);
            lossSum.PlusInPlace(losses.sum());
            if (!backward) continue;
            if (needH) gradH!.narrow(0, start, rows).addmm_(g, w, beta: 0);    // (c, V) @ (V, D), written in place (beta 0: the empty rows are not read)
            if (needW)
            {
                // (V, c) @ (c, D): the GEMM accumulates the chunk's rows in fp32; later chunks add into the sum in the GEMM
                if (gradW is null) gradW = g.t().mm(hc).MoveToOuterDisposeScope();
                else gradW.addmm_(g.t(), hc);
            }
        }
        ctx.save_data("kernels", kernels);
        ctx.save_data("weight", new StrongBox<Tensor>(w));   // the parameter itself (boxed: TorchSharp warns for a tensor in save_data): backward adds into its .grad
        // the saved variables hold the gradients; the handles here are freed by Loss's scope
        ctx.save_for_backward([gradH!, gradW!]);
        ctx.set_materialize_grads(false);
        var loss = lossSum.div_(Scalars.Of(n));
        return [loss];
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReturnedGradients.Release();
        var kernels = (IKernels)ctx.get_data("kernels");
        var weight = ((StrongBox<Tensor>)ctx.get_data("weight")).Value!;
        var saved = ctx.get_saved_variables();   // grad_h (N, D), grad_W (V, D) of the mean loss; null where not needed
        var scale = gradOutputs[0];              // the scalar gradient of the loss
        static bool Has(Tensor? t) => t is not null && !t.IsInvalid;
        Tensor? gradH = null, gradW = null;
        if (Has(scale))
        {
            if (Has(saved[0]))
            {
                gradH = empty_like(saved[0]);
                kernels.ScaleGradient(gradH, saved[0], scale, accumulate: false);
            }
            if (Has(saved[1]))
            {
                using var into = WeightGrad.Into(weight);
                if (into is not null) kernels.ScaleGradient(into, saved[1], scale, accumulate: true);   // nothing goes back to autograd
                else
                {
                    gradW = empty_like(saved[1]);
                    kernels.ScaleGradient(gradW, saved[1], scale, accumulate: false);
                }
            }
        }
        foreach (var s in saved) s?.Dispose();
        foreach (var g in gradOutputs) g?.Dispose();
        ReturnedGradients.Keep([gradH, gradW]);
        return [gradH!, gradW!, null!, null!, null!, null!, null!];   // none for targets, rows, flags and kernels
    }
}
