using DistTrain.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Model.Tests;

static class TinyModels
{
    public static ModelConfig Config(Architecture arch, int layers = 3) =>
        new() { Arch = arch, VocabSize = 48, BlockSize = 32, Dim = 32, NLayer = layers, NHead = 4, IntermediateSize = 256, UseQkNorm = arch == Architecture.MUDDFormer };

    /// <summary>A seeded model whose zero-initialised parts (dynamic_dense w2) are randomised, so every path carries signal.</summary>
    public static LanguageModel Build(ModelConfig config, long seed = 7, ScalarType dtype = ScalarType.Float32)
    {
        manual_seed(seed);
        var model = new LanguageModel(config);
        model.to(dtype);
        using (no_grad())
            foreach (var (name, p) in model.named_parameters())
                if (name.StartsWith("dynamic_dense.") || name.StartsWith("dense_bs.") || name.StartsWith("dwa.") || name.Contains("norm"))
                    p.add_(randn_like(p) * 0.1);
        return model;
    }

    public static Tensor Tokens(ModelConfig config, long batch, long seqLen, long seed = 11)
    {
        manual_seed(seed);
        return randint(config.VocabSize, [batch, seqLen], dtype: ScalarType.Int64);
    }
}
