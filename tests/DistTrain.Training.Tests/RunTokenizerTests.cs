using DistTrain.Checkpoint;
using DistTrain.Data;
using DistTrain.Training.Checkpointing;

namespace DistTrain.Training.Tests;

/// <summary>Which tokenizer `generate` decodes a checkpoint with: the manifest's, an absolute data.train's dataset.json, or --tokenizer.</summary>
public class RunTokenizerTests
{
    static CheckpointManifest Manifest(string? tokenizer) => new()
    {
        Step = 1, Tokens = 1, WorldSize = 1,
        Extra = tokenizer is null ? new() { ["layout"] = "[]" } : new() { ["layout"] = "[]", [RunTokenizer.ManifestKey] = tokenizer },
    };

    static Dictionary<string, object?> Tree(string train) => new() { ["data"] = new Dictionary<string, object?> { ["train"] = train } };

    [Fact]
    public void TheManifestsNameWinsOverTheConfig()
    {
        var tokenizer = RunTokenizer.For("ckpt", Manifest("o200k_base"), Tree("corpus/kjv/train"), vocabSize: 200_064, overrideName: null);
        Assert.Equal("o200k_base", tokenizer.Name);
    }

    [Fact]
    public void WithoutItAnAbsoluteDataTrainsDatasetJsonNamesIt()
    {
        var train = Path.Combine(Repo.Root, "configs", "corpus", "kjv", "train");
        var tokenizer = RunTokenizer.For("ckpt", Manifest(null), Tree(train), vocabSize: 264, overrideName: null);
        Assert.IsType<ByteTokenizer>(tokenizer);
    }

    [Fact]
    public void ARelativeDataTrainAsksForTokenizerAndTheOptionAnswers()
    {
        var e = Assert.Throws<CheckpointException>(() => RunTokenizer.For("ckpt", Manifest(null), Tree("corpus/kjv/train"), 264, null));
        Assert.Equal("ckpt: the checkpoint does not name its tokenizer and its data.train has no dataset.json to ask; pass --tokenizer (byte, cl100k_base, o200k_base)", e.Message);
        Assert.Equal("byte", RunTokenizer.For("ckpt", Manifest(null), Tree("corpus/kjv/train"), 264, "byte").Name);
    }

    [Fact]
    public void ATokenizerWithMoreIdsThanTheModelIsRefused()
    {
        var e = Assert.Throws<CheckpointException>(() => RunTokenizer.For("ckpt", Manifest("cl100k_base"), Tree("x"), 264, null));
        Assert.Equal("ckpt: tokenizer cl100k_base: 100277 ids, the model's vocab_size is 264; pass the --tokenizer the run was trained with", e.Message);
    }
}
