using System.Globalization;

namespace DistTrain.Training.Diagnostics;

/// <summary>
/// Fault injection for the straggler tests: DISTTRAIN_FAULT_SLOW_RANK=RANK@SECONDS makes that rank
/// sleep SECONDS in the forward phase of every micro-batch (a slow GPU or a throttled host). Unset, it does nothing.
/// </summary>
static class SlowRankFault
{
    static readonly (int Rank, TimeSpan Delay)? Fault = Parse(Environment.GetEnvironmentVariable("DISTTRAIN_FAULT_SLOW_RANK"));

    public static void At(int rank)
    {
        if (Fault is { } f && f.Rank == rank) Thread.Sleep(f.Delay);
    }

    static (int, TimeSpan)? Parse(string? value) => value?.Split('@') switch
    {
        [var rank, var seconds] when int.TryParse(rank, out var r) && double.TryParse(seconds, CultureInfo.InvariantCulture, out var s) => (r, TimeSpan.FromSeconds(s)),
        _ => null,
    };
}
