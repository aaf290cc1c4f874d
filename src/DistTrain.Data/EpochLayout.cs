namespace DistTrain.Data;

/// <summary>
/// Where each row group's tokens sit in the epoch's token stream, from the Parquet footers alone (see
/// <see cref="TokenFile.TokensFromMetadata"/>): row group g of the whole file list, counted across files, holds
/// tokens [Start[g], Start[g+1]) of the stream, end-of-text markers included.
/// </summary>
sealed class EpochLayout
{
    readonly long[] _start;       // (groups + 1) prefix sums; _start[groups] = Total
    readonly int[] _firstGroup;   // (files + 1): file f owns groups [_firstGroup[f], _firstGroup[f+1])
    readonly int[] _fileOf;       // (groups)

    EpochLayout(long[] start, int[] firstGroup, int[] fileOf) => (_start, _firstGroup, _fileOf) = (start, firstGroup, fileOf);

    /// <summary>Tokens in one pass over the files, end-of-text markers included.</summary>
    public long Total => _start[^1];

    public static EpochLayout Read(IReadOnlyList<string> files, string column, CancellationToken ct = default)
    {
        if (files.Count == 0) throw NoFiles();
        var start = new List<long> { 0 };
        var fileOf = new List<int>();
        var firstGroup = new int[files.Count + 1];
        for (int f = 0; f < files.Count; f++)
        {
            firstGroup[f] = fileOf.Count;
            // ids are not decoded here, so no vocabulary to check them against
            using TokenFile file = TokenFile.Open(files[f], column, int.MaxValue, ct);
            for (int rg = 0; rg < file.RowGroupCount; rg++)
            {
                start.Add(start[^1] + file.TokensFromMetadata(rg));
                fileOf.Add(f);
            }
        }
        firstGroup[files.Count] = fileOf.Count;
        return new EpochLayout([.. start], firstGroup, [.. fileOf]);
    }

    public static DataException NoFiles() => new(
        "the data set has no files; point data.path at a .parquet file, a folder holding some, or a glob, or create one with `disttrain prepare`");

    /// <summary>The stream offset of row group rowGroup of file file; rowGroup may be the file's group count (its end), file the file count (Total).</summary>
    public long Offset(int file, int rowGroup) => _start[_firstGroup[file] + rowGroup];

    /// <summary>Tokens of one row group per its footer.</summary>
    public long Tokens(int file, int rowGroup) => Offset(file, rowGroup + 1) - Offset(file, rowGroup);

    /// <summary>The row group holding stream token offset (0 ≤ offset &lt; Total) and the offset of its first token.</summary>
    public (int File, int RowGroup, long Start) Locate(long offset)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(offset, Total);
        // the last group starting at or before offset; it is not empty, since the next one starts after offset
        int lo = 0, hi = _fileOf.Length - 1;
        while (lo < hi)
        {
            int mid = (lo + hi + 1) / 2;
            if (_start[mid] <= offset) lo = mid; else hi = mid - 1;
        }
        int file = _fileOf[lo];
        return (file, lo - _firstGroup[file], _start[lo]);
    }
}
