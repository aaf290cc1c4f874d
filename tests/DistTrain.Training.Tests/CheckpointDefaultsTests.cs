using DistTrain.Training.Config;

namespace DistTrain.Training.Tests;

/// <summary>Checkpoints are on by default: every shipped config saves, at a tenth of its steps (at most 1000) and at the end.</summary>
public class CheckpointDefaultsTests
{
    [Theory]
    [InlineData("tiny-transformerpp.yaml", 80)]    // 800 steps: every 80
    [InlineData("tiny-muddformer.yaml", 80)]
    [InlineData("405m-muddformer.yaml", 1000)]     // 20,000 steps: every 1000
    [InlineData("1.4b-transformerpp.yaml", 1000)]
    public void ShippedConfigsSaveByDefault(string config, int interval)
    {
        var c = TrainConfigLoader.Load(Repo.Config(config));
        Assert.Equal(interval, c.Checkpoint.Interval);
        Assert.Equal("", c.Checkpoint.Dir);   // the run directory's checkpoints/
    }

    [Fact]
    public void EveryShippedConfigSaves()
    {
        var configs = Directory.GetFiles(Path.Combine(Repo.Root, "configs"), "*.yaml");
        Assert.NotEmpty(configs);
        Assert.All(configs, path => Assert.True(TrainConfigLoader.LoadModel(path) is not null && TrainConfigLoader.Load(path).Checkpoint.Interval > 0, path));
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(25, 3)]
    [InlineData(800, 80)]
    [InlineData(10_000, 1000)]
    [InlineData(20_000, 1000)]
    public void TheAutoIntervalIsATenthOfTheStepsAtMost1000(int steps, int interval) =>
        Assert.Equal(interval, CheckpointOptions.DefaultInterval(steps));

    [Fact]
    public void AnIntervalIsAutoZeroOrANumberOfSteps()
    {
        var tiny = Repo.Config("tiny-muddformer.yaml");
        Assert.Equal(0, TrainConfigLoader.Load(tiny, ["checkpoint.interval=0"]).Checkpoint.Interval);
        Assert.Equal(7, TrainConfigLoader.Load(tiny, ["checkpoint.interval=7"]).Checkpoint.Interval);
        Assert.Equal(Path.GetFullPath("elsewhere"), TrainConfigLoader.Load(tiny, ["checkpoint.dir=elsewhere"]).Checkpoint.Dir);
        var e = Assert.Throws<ConfigException>(() => TrainConfigLoader.Load(tiny, ["checkpoint.interval=often"]));
        Assert.Contains("checkpoint.interval: 'often' is not auto, 0 (no checkpoints) or a number of steps", e.Message);
    }
}
