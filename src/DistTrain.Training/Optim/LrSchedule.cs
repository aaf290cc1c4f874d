namespace DistTrain.Training.Optim;

/// <summary>Linear warmup to lr over warmup_steps, then cosine decay to min_lr_ratio · lr at the last step.</summary>
public sealed record LrSchedule(double Lr, int WarmupSteps, int TotalSteps, double MinLrRatio)
{
    /// <summary>Learning rate for 0-based <paramref name="step"/>.</summary>
    public double At(int step)
    {
        if (step < WarmupSteps) return Lr * (step + 1) / WarmupSteps;
        double decaySteps = Math.Max(1, TotalSteps - WarmupSteps);
        double progress = Math.Min(1.0, (step - WarmupSteps) / decaySteps);
        double minLr = Lr * MinLrRatio;
        return minLr + 0.5 * (Lr - minLr) * (1 + Math.Cos(Math.PI * progress));
    }
}
