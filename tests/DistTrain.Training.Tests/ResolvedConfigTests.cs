using DistTrain.Training.Config;

namespace DistTrain.Training.Tests;

/// <summary>config.yaml in a run directory: every key with its value, absolute paths, and it loads back to the same run.</summary>
public class ResolvedConfigTests
{
    public static TheoryData<string> Shipped() => [.. Directory.GetFiles(Path.Combine(Repo.Root, "configs"), "*.yaml").Select(f => Path.GetFileName(f)).Order()];

    [Theory]
    [MemberData(nameof(Shipped))]
    public void EveryShippedConfigResolvesToAFileThatLoadsBackToTheSameOptionsFromAnotherFolder(string name)
    {
        var original = TrainConfigLoader.Load(Repo.Config(name));
        using var dir = new TempDir();
        var copy = dir.File("config.yaml", ResolvedConfig.Yaml(original));
        var again = TrainConfigLoader.Load(copy);

        Assert.Equal(ResolvedConfig.Yaml(original), ResolvedConfig.Yaml(again));   // a fixed point
        Assert.Equal(original.Data with { }, again.Data);
        Assert.Equal(original.Optim, again.Optim);
        Assert.Equal(original.Train with { RunDir = Path.GetFullPath(original.Train.RunDir) }, again.Train);   // relative to the folder it ran from
        Assert.Equal(original.Checkpoint, again.Checkpoint);
        Assert.Equal(original.Telemetry, again.Telemetry);
        var (m, n) = (original.Model, again.Model);
        Assert.Equal((m.Arch, m.Dim, m.NLayer, m.NHead, m.VocabSize, m.BlockSize, m.DenseType, m.UseQkNorm, m.DwaPeriod, m.DwaDilation),
            (n.Arch, n.Dim, n.NLayer, n.NHead, n.VocabSize, n.BlockSize, n.DenseType, n.UseQkNorm, n.DwaPeriod, n.DwaDilation));
        Assert.Equal(Enumerable.Range(0, m.NLayer).Select(m.FfnWidth), Enumerable.Range(0, n.NLayer).Select(n.FfnWidth));
        Assert.Equal(Enumerable.Range(0, m.NLayer).Select(m.DynamicDenseHidden), Enumerable.Range(0, n.NLayer).Select(n.DynamicDenseHidden));
    }

    [Fact]
    public void DefaultsAreWrittenOutAndPathsAreAbsolute()
    {
        var c = TrainConfigLoader.Load(Repo.Config("tiny-muddformer.yaml"), ["train.steps=50", "checkpoint.resume=latest"]);
        var tree = ResolvedConfig.Tree(c);
        string Value(string section, string key) => (string)((Dictionary<string, object?>)tree[section]!)[key]!;
        Assert.Equal("50", Value("train", "steps"));
        Assert.Equal("5", Value("checkpoint", "interval"));                  // auto: a tenth of train.steps
        Assert.Equal("", Value("checkpoint", "resume"));                     // a resume is the command's
        Assert.Equal("1.5", Value("telemetry", "straggler_factor"));
        Assert.Equal("0.95", Value("optim", "beta2"));
        Assert.Equal(Path.Combine(Repo.Root, "configs", "corpus", "kjv", "train"), Value("data", "train"));
        Assert.Equal(Path.GetFullPath("runs"), Value("train", "run_dir"));
        Assert.Equal(["model", "data", "train", "optim", "checkpoint", "telemetry", "elastic"], tree.Keys);
        Assert.Equal(("0", "0", "60", "0"), (Value("elastic", "max_restarts"), Value("elastic", "min_workers"), Value("elastic", "replace_wait_s"), Value("elastic", "snapshot_interval")));
        Assert.Equal(19, ((Dictionary<string, object?>)tree["model"]!).Count);   // rotary_precision included
        Assert.Equal("bf16", Value("model", "rotary_precision"));
        Assert.Equal("", Value("checkpoint", "init_from"));
        Assert.Equal(19, ((Dictionary<string, object?>)tree["train"]!).Count);
    }
}
