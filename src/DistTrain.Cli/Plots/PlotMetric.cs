using DistTrain.Training;

namespace DistTrain.Cli.Plots;

/// <summary>
/// A panel `disttrain plot --metrics` can draw: its metrics.jsonl key, its axis label, its value in a
/// report (null: not logged at that step) and optionally a validation series drawn dashed beside it.
/// </summary>
sealed record PlotMetric(string Name, string Label, Func<StepReport, double?> Value, Func<StepReport, double?>? Validation = null)
{
    public static readonly IReadOnlyList<PlotMetric> All =
    [
        new("loss", "loss", r => r.Loss, r => r.ValLoss),
        new("val_loss", "validation loss", r => r.ValLoss),
        new("lr", "learning rate", r => r.Lr),
        new("tokens_per_s", "tokens/s", r => r.TokensPerSecond),
        new("grad_norm", "gradient norm", r => r.GradNorm),
        new("data_wait_s", "data wait per logged window (s)", r => r.DataWaitSeconds),
        new("step_s", "seconds per step", r => r.StepSeconds),
    ];

    /// <summary>"loss,tokens_per_s" -> those panels, in that order.</summary>
    public static IReadOnlyList<PlotMetric> ParseList(string names)
    {
        var chosen = names.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            .Select(name => All.FirstOrDefault(m => m.Name == name)
                ?? throw new ArgumentException($"--metrics: '{name}' is not one of {string.Join(", ", All.Select(m => m.Name))}"))
            .ToList();
        return chosen.Count > 0 ? chosen : throw new ArgumentException($"--metrics: name at least one of {string.Join(", ", All.Select(m => m.Name))}");
    }
}
