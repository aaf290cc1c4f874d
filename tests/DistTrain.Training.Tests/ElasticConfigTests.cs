using DistTrain.Training.Config;

namespace DistTrain.Training.Tests;

/// <summary>The elastic section, and the world sizes a recovery may leave: refused when the job starts, not after a loss.</summary>
public class ElasticConfigTests
{
    static TrainConfig Load(params string[] overrides)
    {
        var file = Path.Combine(Repo.Root, "configs", "tiny-muddformer.yaml");
        return TrainConfigLoader.Load(file, overrides);
    }

    [Fact]
    public void OffByDefaultAndReadWhenSet()
    {
        Assert.False(Load().Elastic.Enabled);
        var e = Load("elastic.max_restarts=5", "elastic.min_workers=2", "elastic.replace_wait_s=7.5", "elastic.snapshot_interval=10").Elastic;
        Assert.Equal((true, 5, 2, 7.5, 10), (e.Enabled, e.MaxRestarts, e.MinimumOf(4), e.ReplaceWaitSeconds, e.SnapshotInterval));
        Assert.Equal(0, Load("elastic.max_restarts=5").Elastic.SnapshotInterval);   // no snapshots unless asked for
        Assert.Equal(4, new ElasticOptions(MaxRestarts: 1).MinimumOf(4));   // 0: every worker
    }

    [Theory]
    [InlineData("elastic.max_restarts=-1", "elastic.max_restarts: must be 0")]
    [InlineData("elastic.min_workers=-2", "elastic.min_workers: must be 0")]
    [InlineData("elastic.replace_wait_s=-1", "elastic.replace_wait_s: must be 0 or more")]
    [InlineData("elastic.restarts=3", "elastic.restarts")]
    [InlineData("elastic.snapshot_interval=-1", "elastic.snapshot_interval: must be 0 (no in-memory snapshots) or the steps between two snapshots")]
    [InlineData("elastic.snapshot_interval=5", "elastic.snapshot_interval: in-memory snapshots serve recovery, and this job does not recover (elastic.max_restarts is 0)")]
    public void BadKeysAreNamed(string assignment, string message) =>
        Assert.Contains(message, Assert.Throws<ConfigException>(() => Load(assignment)).Message);

    [Fact]
    public void EverySizeFromMinWorkersToTheManifestsMustSplitTheBatch()
    {
        var ok = Load("elastic.max_restarts=2", "elastic.min_workers=2", "train.global_batch=12", "data.shards=6", "train.micro_batch=2");
        Assert.Equal([3, 2], ElasticSizes.For(ok, 3));
        Assert.Equal([3], ElasticSizes.For(ok with { Elastic = new ElasticOptions(MaxRestarts: 2) }, 3));   // min_workers 0: all

        string Refusal(int world, params string[] o) => Assert.Throws<ConfigException>(() => ElasticSizes.For(Load(["elastic.max_restarts=1", .. o]), world)).Message;
        Assert.Contains("elastic.min_workers: 5 is more than the 4 workers", Refusal(4, "elastic.min_workers=5"));
        Assert.Contains("train.global_batch: must be set when elastic.min_workers (2)", Refusal(3, "elastic.min_workers=2"));
        Assert.Contains("data.shards: must be set when elastic.min_workers (2) lets the job go on with fewer than its 3 workers", Refusal(3, "elastic.min_workers=2", "train.global_batch=12"));
        // 12 over 3 ranks is 4 each, over 2 it is 6: micro-batch 4 fits the first only
        Assert.Contains("elastic.min_workers: 2 lets the job go on with 2 workers, but with 2: train.micro_batch",
            Refusal(3, "elastic.min_workers=2", "train.global_batch=12", "data.shards=6", "train.micro_batch=4"));
        Assert.Contains("e.g. 12", Refusal(4, "elastic.min_workers=3", "train.global_batch=12", "train.micro_batch=1"));   // data.shards: lcm(3, 4)
    }
}
