using DistTrain.Data;
using DistTrain.Training.Config;

namespace DistTrain.Training;

/// <summary>The canonical shards one rank streams: each a contiguous range of the epoch's windows.</summary>
public sealed record DataAssignment(DataParallelPlan Plan, IReadOnlyList<(int Shard, WindowRange Range)> Shards)
{
    /// <summary>
    /// The assignment of <paramref name="rank"/>, from the data set's footers: the epoch's N windows
    /// split into data.shards ranges of N / shards each (the remainder, fewer than shards windows, is
    /// not used in that epoch), rank r taking shards [r · S/W, (r + 1) · S/W). A pure function of
    /// the data, seq_len, shard count and world size: every process computes the same.
    /// </summary>
    public static DataAssignment For(TrainConfig config, DataParallelPlan plan, int rank)
    {
        long total = DatasetWindows.Count(DatasetFiles.Resolve(config.Data.Train), config.Data.Column, config.Train.SeqLen);
        if (total / plan.Shards < plan.WindowsPerShard)
            throw new ConfigException($"{config.Source}: data.shards: {config.Data.Train} holds {total} windows of {config.Train.SeqLen + 1} tokens; " +
                $"{plan.Shards} shards of {total / plan.Shards} cannot feed {plan.WindowsPerShard} windows each per step; use fewer shards, a smaller global batch or more data");
        return new DataAssignment(plan, plan.ShardsOf(rank).Select(s => (s, WindowRange.ForRank(total, s, plan.Shards))).ToList());
    }
}
