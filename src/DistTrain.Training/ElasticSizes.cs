using DistTrain.Training.Config;

namespace DistTrain.Training;

/// <summary>
/// The world sizes an elastic job may train with: every size from elastic.min_workers up to the manifest's. A generation
/// that goes on without a lost worker keeps the global batch and the data shards (so the sample order and the loss curve do
/// not change), so both must be pinned and split over each of these sizes; checked when the job starts, not after a loss.
/// </summary>
public static class ElasticSizes
{
    public static IReadOnlyList<int> For(TrainConfig c, int worldSize)
    {
        var e = c.Elastic;
        if (!e.Enabled) return [worldSize];
        int min = e.MinimumOf(worldSize);
        if (min > worldSize)
            throw new ConfigException($"{c.Source}: elastic.min_workers: {min} is more than the {worldSize} workers the manifest lists; use at most {worldSize} (0: all of them)");
        if (min == worldSize) return [worldSize];
        if (c.Train.GlobalBatch == 0)
            throw new ConfigException($"{c.Source}: train.global_batch: must be set when elastic.min_workers ({min}) lets the job go on with fewer than its {worldSize} workers " +
                "(0 means micro_batch x grad_accum x world size, which would change with the world size); " +
                $"set it, e.g. to {c.Train.MicroBatch * c.Train.GradAccum * worldSize}");
        if (c.Data.Shards == 0)
            throw new ConfigException($"{c.Source}: data.shards: must be set when elastic.min_workers ({min}) lets the job go on with fewer than its {worldSize} workers " +
                $"(0 means one shard per rank, which would change the sample order); set it to a multiple of every size from {min} to {worldSize}, e.g. {Lcm(min, worldSize)}");
        var sizes = new List<int>();
        for (int n = worldSize; n >= min; n--)
        {
            try { DataParallelPlan.For(c, n); }
            catch (ConfigException refused)
            {
                throw new ConfigException($"{c.Source}: elastic.min_workers: {min} lets the job go on with {n} workers, but with {n}: {refused.Message[(c.Source.Length + 2)..]} " +
                    $"(every size from {min} to {worldSize} must split them: data.shards {Lcm(min, worldSize)} and a global batch that is a multiple of it, with a micro_batch that divides each rank's share; or raise elastic.min_workers)");
            }
            sizes.Add(n);
        }
        return sizes;
    }

    static int Lcm(int from, int to)
    {
        long l = 1;
        for (int n = from; n <= to; n++) l = l / Gcd(l, n) * n;
        return (int)l;
    }

    static long Gcd(long a, long b) => b == 0 ? a : Gcd(b, a % b);
}
