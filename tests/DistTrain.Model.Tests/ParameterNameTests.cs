using DistTrain.Model;

namespace DistTrain.Model.Tests;

public class ParameterNameTests
{
    [Fact]
    public void MuddFormerUsesTheOfficialNamesAndShapes()
    {
        var config = TinyModels.Config(Architecture.MUDDFormer, layers: 3);
        using var model = new LanguageModel(config);
        var shapes = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape);

        Assert.Equal([48L, 32], shapes["tok_embeddings.weight"]);
        Assert.Equal([32L, 32], shapes["layers.0.attention.wq.weight"]);
        Assert.Equal([32L, 32], shapes["layers.2.attention.wv.weight"]);
        Assert.Equal([32L, 32], shapes["layers.1.attention.wo.weight"]);
        Assert.Equal([8L], shapes["layers.1.attention.q_norm.weight"]);
        Assert.Equal([32L], shapes["layers.0.attention_norm.weight"]);          // the first layer has one input
        Assert.Equal([32L], shapes["layers.1.attention_norms.2.weight"]);       // sepln: Q, K, V norms
        Assert.False(shapes.ContainsKey("layers.1.attention_norm.weight"));
        Assert.Equal([128L, 32], shapes["layers.0.feed_forward.w1.weight"]);   // round(256 · 0.5 / 128) · 128
        Assert.Equal([384L, 32], shapes["layers.2.feed_forward.w3.weight"]);   // round(256 · 1.5 / 128) · 128
        Assert.Equal([4L, 2], shapes["dense_bs.0"]);
        Assert.Equal([1L, 4], shapes["dense_bs.2"]);                            // the last layer: one stream over 4 outputs
        Assert.Equal([64L, 32], shapes["dynamic_dense.0.w1.weight"]);
        Assert.Equal([8L, 64], shapes["dynamic_dense.0.w2.weight"]);
        Assert.Equal([4L, 64], shapes["dynamic_dense.2.w2.weight"]);
        Assert.Equal([32L], shapes["norm.weight"]);
        Assert.Equal([48L, 32], shapes["output.weight"]);
    }

    [Fact]
    public void BaselinesUseOneFusedQkvAndNoDenseParameters()
    {
        using var model = new LanguageModel(TinyModels.Config(Architecture.TransformerPP));
        var names = model.named_parameters().Select(p => p.name).ToHashSet();
        Assert.Contains("layers.0.attention.wqkv.weight", names);
        Assert.DoesNotContain(names, n => n.StartsWith("dense_bs") || n.StartsWith("dynamic_dense") || n.Contains("attention.wq."));
    }
}
