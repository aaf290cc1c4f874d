namespace DistTrain.Coordinator;

/// <summary>One rank's timing as the straggler rule sees it.</summary>
public sealed class RankTiming
{
    public double ComputeSeconds;      // mean compute per step (all but the all-reduce), from heartbeats; 0: not yet
    public double LatenessSeconds;     // ComputeSeconds minus the other ranks' median
    public double Ratio;               // ComputeSeconds over that median
    public DateTime? SlowSince;
    public bool Straggler;
}

/// <summary>
/// Data-parallel ranks wait for each other at every all-reduce, so a slow rank does not show in
/// anyone's step time, only in its compute time: the others spend the difference waiting. A rank
/// whose compute per step stays above <paramref name="factor"/> x the median of the other ranks'
/// for <paramref name="after"/> is a straggler; it stops being one when it drops below.
/// </summary>
public sealed class Stragglers(double factor, TimeSpan after)
{
    public enum Change { None, Became, Recovered }

    /// <summary>Updates every rank's lateness; returns the ranks that became or stopped being stragglers now.</summary>
    public List<(int Rank, Change Change)> Update(IReadOnlyDictionary<int, RankTiming> ranks, DateTime now)
    {
        var changes = new List<(int, Change)>();
        foreach (var (rank, t) in ranks)
        {
            var others = ranks.Where(r => r.Key != rank && r.Value.ComputeSeconds > 0).Select(r => r.Value.ComputeSeconds).ToList();
            if (t.ComputeSeconds <= 0 || others.Count == 0) continue;
            double median = Median(others);
            (t.LatenessSeconds, t.Ratio) = (t.ComputeSeconds - median, t.ComputeSeconds / median);
            if (t.Ratio >= factor)
            {
                t.SlowSince ??= now;
                if (!t.Straggler && now - t.SlowSince >= after) { t.Straggler = true; changes.Add((rank, Change.Became)); }
            }
            else
            {
                t.SlowSince = null;
                if (t.Straggler) { t.Straggler = false; changes.Add((rank, Change.Recovered)); }
            }
        }
        return changes;
    }

    static double Median(List<double> values)
    {
        values.Sort();
        int n = values.Count;
        return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
    }
}
