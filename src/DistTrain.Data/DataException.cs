namespace DistTrain.Data;

/// <summary>
/// A data set, a file in it or a cursor into it is unusable. The message names the file (and row group, row
/// where it applies) and says what to change.
/// </summary>
public sealed class DataException : Exception
{
    public DataException(string message) : base(message) { }
    public DataException(string message, Exception inner) : base(message, inner) { }
}
