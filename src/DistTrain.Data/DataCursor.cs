using System.Text.Json;

namespace DistTrain.Data;

/// <summary>
/// Where the next window's first token sits in the token stream of <see cref="TokenWindowReader"/>, and how many
/// windows were emitted before it. A checkpoint stores it; a reader started from it yields exactly the windows
/// the uninterrupted reader would have yielded next. With a <see cref="WindowRange"/> the position is still one
/// in the whole epoch's stream (a rank's cursor lies inside its range), and the reader derives the next window's
/// global index from it.
/// </summary>
/// <param name="Epoch">Passes over the file list (or the reader's range) completed before this position (0 in the first pass).</param>
/// <param name="File">Index into the reader's file list. Equal to the file count only at the epoch's end:
/// the next window then starts pass Epoch+1 (or the reader is exhausted when it does not loop).</param>
/// <param name="RowGroup">Row group within that file.</param>
/// <param name="Row">Row (document) within that row group.</param>
/// <param name="Token">Token within that document; the document's length is the position of its end-of-text.</param>
/// <param name="Windows">Windows this reader (and those it resumed) emitted so far, over all epochs.</param>
public sealed record DataCursor(int Epoch, int File, int RowGroup, long Row, int Token, long Windows)
{
    public static readonly DataCursor Start = new(0, 0, 0, 0, 0, 0);

    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    /// <summary>One line: {"epoch":0,"file":1,"rowGroup":2,"row":3,"token":4,"windows":5}.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Json);

    public static DataCursor FromJson(string json)
    {
        DataCursor? cursor;
        try
        {
            cursor = JsonSerializer.Deserialize<DataCursor>(json, Json);
        }
        catch (JsonException e)
        {
            throw new DataException($"data cursor is not valid JSON ({e.Message}); expected {Start.ToJson()}", e);
        }
        if (cursor is null)
            throw new DataException($"data cursor is null; expected {Start.ToJson()}");
        if (cursor.Epoch < 0 || cursor.File < 0 || cursor.RowGroup < 0 || cursor.Row < 0 || cursor.Token < 0 || cursor.Windows < 0)
            throw new DataException($"data cursor {json} has a negative field; every field counts from 0");
        return cursor;
    }
}
