using DistTrain.Model;
using DistTrain.Training.Config;

namespace DistTrain.Training.Diagnostics;

/// <summary>
/// A rough device-memory estimate for one rank, per activation-checkpointing policy, from tensor shapes alone (for
/// --dry-run; `disttrain bench` measures). State: fp32 master weights, the compute-dtype copy (bf16 only), the gradients
/// in the compute dtype, two fp32 AdamW moments. Activations of one micro-batch of N = micro_batch x seq_len tokens, in
/// the compute dtype: per layer about 10·dim + 3·ffn_width values per token saved for backward (norm inputs and outputs,
/// q, k, v, attention output, residuals; SwiGLU's two projections and product), plus the dense connection's own (MUDD:
/// four mixed streams, the dynamic-dense MLP hidden and its C·(i+2) weights; DenseFormer: the averaged stream). block
/// keeps each layer's inputs (MUDD: four streams and the layer output, five hidden-sized tensors; DenseFormer: two; else
/// one) plus one layer's full set while it is recomputed; mudd keeps the layer output and the C·(i+2) mixing weights
/// (MUDDFormer only; elsewhere the same as block). The loss adds one chunk of logits (loss_chunk rows x vocab, compute
/// dtype plus an fp32 gradient), or all of them with loss_chunk 0. Not counted: the allocator's cache and fragmentation,
/// attention and matmul workspaces, communication buckets, the CUDA context (about 0.5 GiB).
/// </summary>
public sealed record MemoryEstimate(CheckpointKind Policy, long StateBytes, long ActivationBytes)
{
    public long TotalBytes => StateBytes + ActivationBytes;

    public static IReadOnlyList<MemoryEstimate> For(TrainConfig c, long parameters, int microBatch)
    {
        var (m, t) = (c.Model, c.Train);
        long e = t.Precision switch { "bf16" => 2, "fp64" => 8, _ => 4 };
        long master = t.Precision == "fp64" ? 8 : 4;
        long state = parameters * (master + (e == master ? 0 : e) + e + 2 * master);
        long n = (long)microBatch * t.SeqLen;
        int streams = m.Arch == Architecture.MUDDFormer ? m.DenseType.Length : 1;

        long Full(int i) => n * e * (10L * m.Dim + 3L * m.FfnWidth(i) + m.Arch switch
        {
            Architecture.MUDDFormer => (long)m.Streams(i) * m.Dim + m.DynamicDenseHidden(i) + (long)m.Streams(i) * (i + 2),
            Architecture.DenseFormer => m.Dim,
            _ => 0,
        }) + n * m.NHead * 4L;   // SDPA's fp32 log-sum-exp
        long Kept(int i) => n * e * (m.Arch switch
        {
            Architecture.MUDDFormer => (i == 0 ? 1L : streams) * m.Dim + m.Dim,
            Architecture.DenseFormer => 2L * m.Dim,
            _ => m.Dim,
        });
        long MuddKept(int i) => m.Arch == Architecture.MUDDFormer ? n * e * (m.Dim + (long)m.Streams(i) * (i + 2)) : Kept(i);

        var layers = Enumerable.Range(0, m.NLayer).ToList();
        long loss = (t.LossChunk > 0 ? Math.Min(t.LossChunk, n) : n) * m.VocabSize * (e + 4) + n * m.Dim * e;   // logits (+ fp32 grad), embedding output
        long recompute = layers.Max(Full);
        return
        [
            new(CheckpointKind.None, state, layers.Sum(Full) + loss),
            new(CheckpointKind.Block, state, layers.Sum(Kept) + recompute + loss),
            new(CheckpointKind.Mudd, state, layers.Sum(MuddKept) + recompute + loss),
        ];
    }
}
