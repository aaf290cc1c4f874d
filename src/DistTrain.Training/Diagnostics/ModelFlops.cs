using DistTrain.Model;

namespace DistTrain.Training.Diagnostics;

/// <summary>
/// Training FLOPs per token, the usual estimate (Kaplan et al.; PaLM's MFU): 6·N for the matmuls
/// forward and backward, N = every parameter but the token embedding (a lookup), plus 12·L·D·T for
/// attention scores and values at sequence length T, counted in full (not halved for the causal
/// mask). The dense mixing (2·C·L'·D per token and layer) is left out: under 1% at these sizes.
/// </summary>
public static class ModelFlops
{
    public static double PerToken(ModelConfig config, ModelInfo info, int seqLen) =>
        6.0 * (info.Total - info.Embedding) + 12.0 * config.NLayer * config.Dim * seqLen;

    /// <summary>Dense bf16 peak of known GPUs (FLOP/s, no sparsity); 0 when unknown.</summary>
    public static double PeakBf16(string deviceName) =>
        deviceName.Contains("H100") || deviceName.Contains("H200") || deviceName.Contains("GH200") ? 989.4e12
        : deviceName.Contains("A100") ? 312e12
        : 0;
}
