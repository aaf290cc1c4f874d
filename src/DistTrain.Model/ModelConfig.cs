namespace DistTrain.Model;

/// <summary>Which cross-layer connection the model uses.</summary>
public enum Architecture
{
    /// <summary>Plain pre-norm residual stream: RMSNorm, rotary, SwiGLU, no biases.</summary>
    TransformerPP,
    /// <summary>Static depth-weighted averages of all earlier block outputs (arXiv 2402.02622).</summary>
    DenseFormer,
    /// <summary>Multiway dynamic dense connections, dense_type qkvr (arXiv 2502.12170).</summary>
    MUDDFormer,
}

/// <summary>The precision of the rotary cos/sin tables (model.rotary_precision).</summary>
public enum RotaryPrecision
{
    /// <summary>Rounded to bf16, as the official MUDDFormer code's cache.</summary>
    Bf16,
    /// <summary>Kept in fp32, as transformers' LlamaRotaryEmbedding computes them.</summary>
    Fp32,
}

/// <summary>
/// One model config for all three architectures. Field names follow the official MUDDFormer
/// config (configuration_muddformer.py) so that exported config.json files load unchanged.
/// </summary>
public sealed record ModelConfig
{
    public Architecture Arch { get; init; } = Architecture.MUDDFormer;
    public int VocabSize { get; init; } = 50432;
    public int BlockSize { get; init; } = 2048;
    public int Dim { get; init; } = 1024;
    public int NLayer { get; init; } = 24;
    public int NHead { get; init; } = 16;
    /// <summary>-1 means n_head (grouped-query attention is not supported yet).</summary>
    public int NLocalHeads { get; init; } = -1;
    /// <summary>0 means the official default: find_multiple(int(2 * 4 * dim / 3), 256).</summary>
    public int IntermediateSize { get; init; }
    public double RopeBase { get; init; } = 10000;
    public double NormEps { get; init; } = 1e-6;
    public bool UseQkNorm { get; init; }
    public string DenseType { get; init; } = "qkvr";
    public bool Sepln { get; init; } = true;
    public bool ExpandLast { get; init; } = true;
    public bool Round64 { get; init; } = true;
    /// <summary>FFN width grows linearly from 0.5x to 1.5x over depth, as in the official MUDDFormer
    /// FeedForward; null means: on for MUDDFormer, off for the other two.</summary>
    public bool? FfnScaleWithLayer { get; init; }
    /// <summary>DenseFormer: each average sees every k-th earlier output (k = 1: all).</summary>
    public int DwaDilation { get; init; } = 1;
    /// <summary>DenseFormer: an average after every p-th block (p = 1: after each).</summary>
    public int DwaPeriod { get; init; } = 1;
    /// <summary>
    /// rotary_precision: bf16 rounds the cos/sin tables to bf16 as the official MUDDFormer precompute_freqs_cis does
    /// (the default); fp32 keeps them in fp32 as transformers' Llama does (what a Llama import sets).
    /// </summary>
    public RotaryPrecision RotaryPrecision { get; init; } = RotaryPrecision.Bf16;

    public int HeadDim => Dim / NHead;
    public bool ScalesFfnWithLayer => FfnScaleWithLayer ?? Arch == Architecture.MUDDFormer;
    public int LocalHeads => NLocalHeads == -1 ? NHead : NLocalHeads;
    public int BaseIntermediateSize => IntermediateSize > 0 ? IntermediateSize : FindMultiple(2 * 4 * Dim / 3, 256);

    /// <summary>Streams produced by the dynamic-dense block after layer <paramref name="layer"/>: Q, K, V, R, or one after the last.</summary>
    public int Streams(int layer) => layer == NLayer - 1 ? 1 : DenseType.Length;

    /// <summary>SwiGLU width of layer i: round(I * (i / (L - 1) + 0.5) / 128) * 128 when scaled with depth.</summary>
    public int FfnWidth(int layer)
    {
        if (!ScalesFfnWithLayer || NLayer == 1) return BaseIntermediateSize;
        double scaled = BaseIntermediateSize * ((double)layer / (NLayer - 1) + 0.5);
        return (int)Math.Round(scaled / 128, MidpointRounding.ToEven) * 128;   // Python's round()
    }

    /// <summary>Hidden width of the dynamic-dense MLP after layer i: C·(i+2), x4 on the last layer with expand_last, then (h // 64 + 1) * 64 with round64.</summary>
    public int DynamicDenseHidden(int layer)
    {
        int hidden = Streams(layer) * (layer + 2);
        if (layer == NLayer - 1 && ExpandLast) hidden *= 4;
        if (Round64) hidden = (hidden / 64 + 1) * 64;
        return hidden;
    }

    /// <summary>DenseFormer: whether an average follows block i.</summary>
    public bool HasDwa(int layer) => (layer + 1) % DwaPeriod == 0;   // as the epfml/DenseFormer package: none after a last block the period skips

    /// <summary>DenseFormer: indices j of the representations h_0 (embedding) .. h_{i+1} averaged after block i.</summary>
    public int[] DwaInputs(int layer) =>
        Enumerable.Range(0, layer + 2).Where(j => (layer + 1 - j) % DwaDilation == 0).ToArray();

    public static int FindMultiple(int n, int k) => n % k == 0 ? n : n + k - n % k;
}
