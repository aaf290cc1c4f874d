namespace DistTrain.Data;

/// <summary>
/// A contiguous share of an epoch's global window sequence: windows [First, First+Count). The global sequence is
/// what a <see cref="TokenWindowReader"/> without a range yields in one pass, window 0 first; its length is
/// <see cref="DatasetWindows.Count"/>.
/// </summary>
public sealed record WindowRange(long First, long Count)
{
    /// <summary>One past the last window of the range.</summary>
    public long End => First + Count;

    /// <summary>
    /// Rank rank's share of totalWindows for worldSize data-parallel ranks: [rank·M, rank·M + M) with
    /// M = totalWindows / worldSize, so every rank takes the same number of windows per epoch and, over the
    /// ranks, every window of [0, worldSize·M) is taken exactly once. The last totalWindows mod worldSize windows
    /// of the epoch are not trained in any epoch.
    /// </summary>
    public static WindowRange ForRank(long totalWindows, int rank, int worldSize)
    {
        if (worldSize < 1) throw new ArgumentOutOfRangeException(nameof(worldSize), worldSize, "the world size must be at least 1");
        if (rank < 0 || rank >= worldSize)
            throw new ArgumentOutOfRangeException(nameof(rank), rank, $"the rank must lie in [0, world size {worldSize})");
        ArgumentOutOfRangeException.ThrowIfNegative(totalWindows);
        if (totalWindows < worldSize)
            throw new DataException(
                $"the data set holds {totalWindows} window(s) per epoch, fewer than the {worldSize} ranks that each need at least one; "
                + "lower the world size or train.seq_len, or add data.");
        long perRank = totalWindows / worldSize;
        return new WindowRange(rank * perRank, perRank);
    }
}
