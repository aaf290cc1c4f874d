using DistTrain.Model;
using DistTrain.Model.Layers;
using static TorchSharp.torch;

namespace DistTrain.Model.Tests;

/// <summary>model.rotary_precision: bf16 tables as the official MUDDFormer cache (the default), fp32 as transformers' Llama.</summary>
public class RotaryPrecisionTests
{
    [Fact]
    public void Bf16TablesAreTheFp32TablesRoundedToBf16()
    {
        var (cos32, sin32) = Rotary.Tables(64, 16, 10000, CPU, RotaryPrecision.Fp32);
        var (cos16, sin16) = Rotary.Tables(64, 16, 10000, CPU);   // the default stays bf16: official-code parity
        using var _ = NewDisposeScope();
        Assert.True(cos16.eq(cos32.to(ScalarType.BFloat16).to(ScalarType.Float32)).all().item<bool>());
        Assert.True(sin16.eq(sin32.to(ScalarType.BFloat16).to(ScalarType.Float32)).all().item<bool>());
        // fp32: cos(p / 10000^(2i/d)) itself, as transformers computes it (up to fp32 rounding of the angle)
        double angle = 63 / Math.Pow(10000, 2.0 * 3 / 16);
        Assert.Equal(Math.Cos(angle), cos32[63, 0, 3].item<float>(), 5);
        Assert.True(cos16.sub(cos32).abs().max().item<float>() > 1e-4);   // the rounding is real
    }

    [Fact]
    public void TheModelUsesTheConfiguredTables()
    {
        var config = new ModelConfig { Arch = Architecture.TransformerPP, VocabSize = 32, BlockSize = 16, Dim = 32, NLayer = 2, NHead = 2, IntermediateSize = 64 };
        manual_seed(1);
        using var bf16 = new LanguageModel(config);
        using var fp32 = new LanguageModel(config with { RotaryPrecision = RotaryPrecision.Fp32 });
        fp32.load_state_dict(bf16.state_dict());
        using var ids = randint(0, 32, [1, 16]);
        using var noGrad = no_grad();
        using var a = bf16.forward(ids);
        using var b = fp32.forward(ids);
        double gap = a.sub(b).abs().max().item<float>();
        Assert.True(gap > 0 && gap < 1e-2, $"max |logit gap| {gap:E2}");
    }
}
