using DistTrain.Coordinator;

namespace DistTrain.Coordinator.Tests;

/// <summary>The straggler rule: compute per step against the other ranks' median, for long enough.</summary>
public class StragglerTests
{
    static readonly DateTime T0 = new(2026, 11, 24, 12, 0, 0, DateTimeKind.Utc);

    static Dictionary<int, RankTiming> Ranks(params double[] compute) =>
        compute.Select((c, i) => (i, new RankTiming { ComputeSeconds = c })).ToDictionary(x => x.i, x => x.Item2);

    [Fact]
    public void ASlowRankBecomesAStragglerOnlyAfterStayingSlowAndRecoversWhenItCatchesUp()
    {
        var rule = new Stragglers(factor: 1.5, after: TimeSpan.FromSeconds(10));
        var ranks = Ranks(1.0, 1.1, 0.9, 2.0);

        Assert.Empty(rule.Update(ranks, T0));                     // slow, but not for 10 s yet
        Assert.Equal(2.0 / 1.0, ranks[3].Ratio, 9);               // median of 1.0, 1.1, 0.9
        Assert.Equal(1.0, ranks[3].LatenessSeconds, 9);
        Assert.Equal(1.0 - 1.1, ranks[0].LatenessSeconds, 9);     // median of 1.1, 0.9, 2.0
        Assert.Empty(rule.Update(ranks, T0.AddSeconds(9)));
        Assert.Equal([(3, Stragglers.Change.Became)], rule.Update(ranks, T0.AddSeconds(10)));
        Assert.True(ranks[3].Straggler);
        Assert.Empty(rule.Update(ranks, T0.AddSeconds(20)));      // reported once

        ranks[3].ComputeSeconds = 1.2;
        Assert.Equal([(3, Stragglers.Change.Recovered)], rule.Update(ranks, T0.AddSeconds(21)));
        Assert.False(ranks[3].Straggler);
        Assert.All(ranks.Values, r => Assert.False(r.Straggler));
    }

    [Fact]
    public void ABriefSlowdownIsNotAStragglerAndRanksWithoutTimesAreLeftOut()
    {
        var rule = new Stragglers(factor: 1.5, after: TimeSpan.FromSeconds(10));
        var ranks = Ranks(1.0, 3.0, 0);                           // rank 2 has not reported a time yet
        Assert.Empty(rule.Update(ranks, T0));
        Assert.Equal(2.0, ranks[1].LatenessSeconds, 9);           // against rank 0 alone
        Assert.Equal(0, ranks[2].LatenessSeconds);
        ranks[1].ComputeSeconds = 1.0;
        Assert.Empty(rule.Update(ranks, T0.AddSeconds(5)));
        ranks[1].ComputeSeconds = 3.0;
        Assert.Empty(rule.Update(ranks, T0.AddSeconds(12)));      // slow again: the 10 s start over
        Assert.False(ranks[1].Straggler);
    }
}
