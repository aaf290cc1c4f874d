namespace DistTrain.Data;

/// <summary>The length of an epoch's global window sequence, for sharding it with <see cref="WindowRange.ForRank"/>.</summary>
public static class DatasetWindows
{
    /// <summary>
    /// Windows of seqLen+1 tokens in one pass over files (documents each followed by one end-of-text, the partial
    /// tail dropped): exactly the windows a <see cref="TokenWindowReader"/> without a range yields per epoch.
    /// Reads the Parquet footers only (per row group: values − nulls + rows). Exact for files from `disttrain prepare`,
    /// Parquet.Net and arrow-rs, whose null counts include empty documents; a writer whose null count leaves empty
    /// documents out, or that writes no statistics, overcounts by one per empty document. A reader with a range
    /// checks each row group it decodes against its footer and stops with a DataException on such files.
    /// </summary>
    public static long Count(IReadOnlyList<string> files, string column, int seqLen)
    {
        if (seqLen < 1) throw new ArgumentOutOfRangeException(nameof(seqLen), seqLen, "seqLen must be at least 1");
        ArgumentException.ThrowIfNullOrEmpty(column);
        return EpochLayout.Read(files, column).Total / (seqLen + 1);
    }

    /// <summary>Tokens in one pass over files, end-of-text markers included, from the Parquet footers (as <see cref="Count"/>).</summary>
    public static long Tokens(IReadOnlyList<string> files, string column) => EpochLayout.Read(files, column).Total;
}
