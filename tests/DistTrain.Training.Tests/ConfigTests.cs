using DistTrain.Model;
using DistTrain.Training.Config;

namespace DistTrain.Training.Tests;

public class ConfigTests
{
    const string Valid = """
        model:
          size: tiny
          arch: muddformer
        data:
          train: corpus/kjv/train
        train:
          steps: 10
        """;

    static TrainConfig Load(string yaml, params string[] overrides)
    {
        using var dir = new TempDir();
        var file = dir.File("c.yaml", yaml.Replace("corpus/kjv", Path.Combine(Repo.Root, "configs", "corpus", "kjv")));
        return TrainConfigLoader.Load(file, overrides);
    }

    static string Error(string yaml, params string[] overrides) => Assert.Throws<ConfigException>(() => Load(yaml, overrides)).Message;

    [Fact]
    public void AValidConfigResolvesSizeArchAndTheDatasetsEndOfText()
    {
        var c = Load(Valid);
        Assert.Equal(Architecture.MUDDFormer, c.Model.Arch);
        Assert.Equal(64, c.Model.Dim);
        Assert.Equal(256, c.Data.EndOfText);           // from configs/corpus/kjv/dataset.json
        Assert.Equal(10, c.Train.Steps);
    }

    [Fact]
    public void RotaryPrecisionIsBf16UnlessSetAndAnUnknownValueIsRefusedByKey()
    {
        Assert.Equal(RotaryPrecision.Bf16, Load(Valid).Model.RotaryPrecision);
        Assert.Equal(RotaryPrecision.Fp32, Load(Valid, "model.rotary_precision=fp32").Model.RotaryPrecision);
        Assert.EndsWith("model.rotary_precision: 'fp64' is not one of: bf16, fp32", Error(Valid, "model.rotary_precision=fp64"));
    }

    [Fact]
    public void InitFromIsAnAbsolutePath()
    {
        Assert.Equal("", Load(Valid).Checkpoint.InitFrom);
        Assert.Equal(Path.GetFullPath("some/ckpt"), Load(Valid, "checkpoint.init_from=some/ckpt").Checkpoint.InitFrom);
    }

    [Fact]
    public void SetOverridesWinAndReachTheResolvedTree()
    {
        var c = Load(Valid, "train.steps=7", "model.arch=denseformer", "optim.lr=1e-3");
        Assert.Equal(7, c.Train.Steps);
        Assert.Equal(Architecture.DenseFormer, c.Model.Arch);
        Assert.Equal(1e-3, c.Optim.Lr);
        Assert.Contains("steps: 7", YamlTree.Write(c.Tree));
    }

    [Fact]
    public void AnUnknownKeyIsNamedWithItsPathAndTheKnownKeys()
    {
        var message = Error(Valid.Replace("arch: muddformer", "arch: muddformer\n  dimm: 64"));
        Assert.Contains("model.dimm: unknown key", message);
        Assert.Contains("dim,", message);
    }

    [Fact]
    public void AnUnknownArchitectureListsTheChoices()
        => Assert.Contains("model.arch: 'gpt5' is not one of: muddformer, denseformer, transformer++", Error(Valid.Replace("arch: muddformer", "arch: gpt5")));

    [Fact]
    public void AMalformedValueNamesTheKey()
        => Assert.Contains("train.steps: 'many' is not a whole number", Error(Valid, "train.steps=many"));

    [Fact]
    public void AMissingTrainingSetSaysWhatToGive()
        => Assert.Contains("data.train: missing", Error(Valid.Replace("  train: corpus/kjv/train\n", "  column: input_ids\n")));

    [Fact]
    public void SizesThatDoNotFitTogetherSayWhatToChange()
    {
        Assert.Contains("model.n_head: dim 64 is not divisible by n_head 5", Error(Valid, "model.n_head=5"));
        Assert.Contains("model.vocab_size: 200 is not above the data's end-of-text id 256", Error(Valid, "model.vocab_size=200"));
        Assert.Contains("train.seq_len: 4096 must be in 1..model.block_size (256)", Error(Valid, "train.seq_len=4096"));
        Assert.Contains("model.size: 'huge' is not a known size", Error(Valid.Replace("size: tiny", "size: huge")));
    }

    [Fact]
    public void TheLossChunkDefaultsToAboutHalfAGibibyteOfLogitsAndRefusesNegatives()
    {
        Assert.Equal(2624, Load(Valid, "model.vocab_size=50432").Train.LossChunk);   // 2624 x 50432 x 4 bytes = 505 MiB
        Assert.Equal(0, Load(Valid, "train.loss_chunk=0").Train.LossChunk);
        Assert.Contains("train.loss_chunk: -1 must be 0 (the full logits, then the loss) or a number of tokens per chunk", Error(Valid, "train.loss_chunk=-1"));
    }

    [Fact]
    public void BadYamlAndAMissingFileAreReportedWithTheirPath()
    {
        Assert.Contains("not valid YAML", Error("model: [unclosed"));
        var missing = Assert.Throws<ConfigException>(() => TrainConfigLoader.Load("/nonexistent/x.yaml")).Message;
        Assert.Contains("/nonexistent/x.yaml: config file not found", missing);
        Assert.Contains("expected key=value", Error(Valid, "train.steps"));
    }

    [Fact]
    public void AGlobalBatchThatDoesNotSplitOverTheRanksOrShardsIsRefused()
    {
        var c = Load(Valid, "train.global_batch=16", "train.micro_batch=4");
        Assert.Equal(2, DataParallelPlan.For(c, 2).GradAccum);                   // 16 / (2 ranks x 4)
        Assert.Contains("train.global_batch: 16 sequences do not split over 3 ranks", Assert.Throws<ConfigException>(() => DataParallelPlan.For(c, 3)).Message);
        Assert.Contains("train.micro_batch: each of the 2 ranks gets 8 sequences per step, not a multiple of micro_batch 3",
            Assert.Throws<ConfigException>(() => DataParallelPlan.For(Load(Valid, "train.global_batch=16", "train.micro_batch=3"), 2)).Message);
        Assert.Contains("data.shards: 3 data shards do not split over 2 ranks",
            Assert.Throws<ConfigException>(() => DataParallelPlan.For(Load(Valid, "train.global_batch=12", "train.micro_batch=2", "data.shards=3"), 2)).Message);
    }

    [Fact]
    public void EveryShippedConfigLoads()
    {
        var files = Directory.GetFiles(Path.Combine(Repo.Root, "configs"), "*.yaml");
        Assert.Equal(15, files.Length);                 // 5 sizes x 3 architectures
        foreach (var file in files) TrainConfigLoader.Load(file);
    }
}
