namespace DistTrain.Data;

/// <summary>
/// Which documents go to validation: document i does when ⌊(i+1)·f⌋ > ⌊i·f⌋, i.e. ⌊n·f⌋ of the first n, evenly
/// spread (f = 0.05: documents 19, 39, 59, ...). Depends only on the index, so a rerun splits identically.
/// </summary>
static class ValidationSplit
{
    public static void Check(double fraction)
    {
        if (!(fraction >= 0 && fraction < 1))
            throw new DataException($"--val-fraction {fraction}: outside [0, 1); use e.g. --val-fraction 0.05, or 0 for no validation split");
    }

    public static bool IsValidation(long index, double fraction) =>
        fraction > 0 && Math.Floor((index + 1) * fraction) > Math.Floor(index * fraction);
}
