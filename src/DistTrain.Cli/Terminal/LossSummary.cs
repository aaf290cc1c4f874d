using DistTrain.Training;

namespace DistTrain.Cli.Terminal;

/// <summary>The summary's loss line: each loss labelled with the steps it averages (a resumed run's first window starts after its checkpoint).</summary>
static class LossSummary
{
    public static string Line(TrainResult result)
    {
        var reports = result.Reports;
        string Steps(int from, int to) => from == to ? $"step {to}" : $"steps {from}-{to}";
        var (first, final) = (reports[0], reports[^1]);
        var head = $"{first.Loss:F4} ({Steps(result.StartStep + 1, first.Step)}{(result.StartStep > 0 ? $", resumed at step {result.StartStep}" : "")})";
        if (reports.Count == 1) return head;
        return $"{head} -> {final.Loss:F4} ({Steps(reports[^2].Step + 1, final.Step)})";
    }
}
