using DistTrain.Model;
using DistTrain.Model.Layers;
using DistTrain.Training.Config;

namespace DistTrain.Training.Diagnostics;

/// <summary>
/// A rough device-memory estimate for one rank, per activation-checkpointing policy, from the config's shapes (for
/// --dry-run; `disttrain bench` measures). State: fp32 master weights, the compute-dtype copy (bf16 only), the gradients
/// in the compute dtype, two fp32 AdamW moments. Activations of one micro-batch of N = micro_batch x seq_len tokens, in
/// values of the compute dtype per token and layer, with coefficients fitted to the H100 measurements in
/// docs/benchmarks.md (405M, seq 2048, micro-batch 8, bf16, chunked loss; each within about 10%): none keeps
/// 6.4·(dim + ffn_width) per layer, plus 20·dim for MUDDFormer's mixing and 1·dim for DenseFormer's average; block keeps
/// each layer's inputs, 6.5·dim (MUDDFormer 9·dim, DenseFormer 7·dim; Transformer++ refitted from 6 when the loss chunks became even), plus one layer's full set while it is recomputed;
/// mudd keeps 6.5·dim per layer (MUDDFormer; elsewhere the same as block). The loss adds one chunk of logits
/// (the rows ChunkedCrossEntropy gives a chunk x vocab, in the compute dtype, plus the reference's fp32 copy where the
/// fused kernels do not run; all rows with loss_chunk 0) and the embedding output.
/// Not counted: the allocator's cache and fragmentation, workspaces, communication buckets, the CUDA context (about 0.5 GiB).
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

        double Full(int i) => 6.4 * (m.Dim + m.FfnWidth(i)) + m.Arch switch { Architecture.MUDDFormer => 20.0 * m.Dim, Architecture.DenseFormer => m.Dim, _ => 0 };
        double Kept(int i) => m.Dim * m.Arch switch { Architecture.MUDDFormer => 9.0, Architecture.DenseFormer => 7.0, _ => 6.5 };
        double MuddKept(int i) => m.Arch == Architecture.MUDDFormer ? 6.5 * m.Dim : Kept(i);
        long Bytes(double valuesPerToken) => (long)(valuesPerToken * n * e);

        var layers = Enumerable.Range(0, m.NLayer).ToList();
        long rows = t.LossChunk > 0 ? ChunkedCrossEntropy.RowsPerChunk(n, t.LossChunk) : n;
        // the fused loss works on the logits in place; the reference keeps an fp32 copy beside them (fp32 and fp64: none)
        bool fusedLoss = t.Kernels == KernelChoice.Fused || (t.Kernels == KernelChoice.Auto && t.Device.StartsWith("cuda", StringComparison.Ordinal));
        long loss = rows * m.VocabSize * (fusedLoss || e >= 4 ? e : e + 4) + n * m.Dim * e;   // one chunk's logits, the embedding output
        long recompute = Bytes(layers.Max(Full));
        return
        [
            new(CheckpointKind.None, state, Bytes(layers.Sum(Full)) + loss),
            new(CheckpointKind.Block, state, Bytes(layers.Sum(Kept)) + recompute + loss),
            new(CheckpointKind.Mudd, state, Bytes(layers.Sum(MuddKept)) + recompute + loss),
        ];
    }
}
