using DistTrain.Training.Config;

namespace DistTrain.Training;

/// <summary>
/// How a global batch is split over ranks and data shards. The data set's window sequence is cut
/// into <see cref="Shards"/> canonical shards (contiguous ranges, data.shards); every step takes
/// <see cref="WindowsPerShard"/> windows from every shard, so the samples of a step — and the loss
/// curve — depend on the shard count, not on how many ranks share the shards. Each rank streams
/// only its <see cref="ShardsPerRank"/> shards.
/// </summary>
public sealed record DataParallelPlan(int WorldSize, int Shards, int GlobalBatch, int MicroBatch, int GradAccum)
{
    public int ShardsPerRank => Shards / WorldSize;
    public int WindowsPerShard => GlobalBatch / Shards;
    public int LocalBatch => GlobalBatch / WorldSize;

    /// <summary>The shards rank <paramref name="rank"/> streams: [rank · S/W, (rank + 1) · S/W).</summary>
    public IEnumerable<int> ShardsOf(int rank) => Enumerable.Range(rank * ShardsPerRank, ShardsPerRank);

    public static DataParallelPlan For(TrainConfig c, int worldSize)
    {
        var t = c.Train;
        int global = t.GlobalBatch > 0 ? t.GlobalBatch : t.MicroBatch * t.GradAccum * worldSize;
        int shards = c.Data.Shards > 0 ? c.Data.Shards : worldSize;
        void Require(bool ok, string key, string message) { if (!ok) throw new ConfigException($"{c.Source}: {key}: {message}"); }
        Require(global % worldSize == 0, "train.global_batch", $"{global} sequences do not split over {worldSize} ranks; make it a multiple of the world size");
        Require(global / worldSize % t.MicroBatch == 0, "train.micro_batch",
            $"each of the {worldSize} ranks gets {global / worldSize} sequences per step, not a multiple of micro_batch {t.MicroBatch}; change train.micro_batch or train.global_batch");
        Require(shards % worldSize == 0, "data.shards", $"{shards} data shards do not split over {worldSize} ranks; use a multiple of the world size (pin it to keep the sample order when the world size changes)");
        Require(global % shards == 0, "data.shards", $"the global batch {global} does not split into {shards} shards; make train.global_batch a multiple of data.shards");
        return new DataParallelPlan(worldSize, shards, global, t.MicroBatch, global / worldSize / t.MicroBatch);
    }
}
