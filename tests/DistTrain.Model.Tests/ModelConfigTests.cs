using DistTrain.Model;

namespace DistTrain.Model.Tests;

public class ModelConfigTests
{
    // Widths below were computed with the official formulas in Python (modeling_muddformer.py:
    // FeedForward round128 + scale_with_layer, MultiwayDynamicDenseBlock round64 + expand_last).
    [Fact]
    public void FfnWidthsOf405MMatchTheOfficialLayerScaling()
    {
        ModelSizes.TryGet("405m", out var c);
        Assert.Equal(2816, c.BaseIntermediateSize);
        int[] expected = [1408, 1536, 1664, 1792, 1920, 2048, 2176, 2304, 2432, 2560, 2688, 2816, 2816, 2944, 3072, 3200, 3328, 3456, 3584, 3712, 3840, 3968, 4096, 4224];
        Assert.Equal(expected, Enumerable.Range(0, 24).Select(c.FfnWidth));
    }

    [Fact]
    public void DynamicDenseWidthsOfTheReleased28BConfigMatch()
    {
        var c = new ModelConfig { Dim = 2560, NLayer = 32, NHead = 32, IntermediateSize = 6912, ExpandLast = true, Round64 = true };
        var hidden = Enumerable.Range(0, 32).Select(c.DynamicDenseHidden).ToArray();
        Assert.Equal(64, hidden[0]);     // 4·2 = 8 -> (8 // 64 + 1)·64
        Assert.Equal(64, hidden[13]);    // 4·15 = 60
        Assert.Equal(128, hidden[14]);   // 4·16 = 64 -> 128 (round64 always adds a block)
        Assert.Equal(192, hidden[31]);   // last: 1·33·4 = 132 -> 192
        Assert.Equal(10368, c.FfnWidth(31));
        Assert.Equal(3456, c.FfnWidth(0));
        Assert.Equal(1, c.Streams(31));
        Assert.Equal(4, c.Streams(30));
    }

    [Fact]
    public void DenseFormerDilationAndPeriodPickTheDocumentedInputs()
    {
        var c = new ModelConfig { Arch = Architecture.DenseFormer, NLayer = 6, DwaDilation = 2, DwaPeriod = 2 };
        Assert.Equal([false, true, false, true, false, true], Enumerable.Range(0, 6).Select(c.HasDwa));
        Assert.Equal([0, 2, 4], c.DwaInputs(3));          // after block 3: h_4, h_2, h_0
        Assert.Equal([1, 3, 5], c.DwaInputs(4));
        Assert.Equal([0, 1, 2], new ModelConfig { NLayer = 6 }.DwaInputs(1));
    }

    [Fact]
    public void APeriodThatDoesNotDivideTheDepthAddsNoAverageAfterTheLastBlockAsTheDenseFormerPackage()
    {
        // epfml/DenseFormer's DWAModules: an average after block i only where (i + 1) % period == 0
        var c = new ModelConfig { Arch = Architecture.DenseFormer, NLayer = 6, DwaDilation = 1, DwaPeriod = 4 };
        Assert.Equal([false, false, false, true, false, false], Enumerable.Range(0, 6).Select(c.HasDwa));
        using var model = TinyModels.Build(TinyModels.Config(Architecture.DenseFormer, layers: 6) with { DwaDilation = 1, DwaPeriod = 4 });
        Assert.Equal(["dwa.3.weight"], model.named_parameters().Select(p => p.name).Where(n => n.StartsWith("dwa.")));
    }
}
