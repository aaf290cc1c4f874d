using System.Text.Json;
using System.Text.Json.Serialization;

namespace DistTrain.Data;

/// <summary>
/// dataset.json, written by <see cref="ParquetPreparer"/> next to train/ and val/: the tokenizer the ids belong to
/// and what the shards hold. Files are relative to the folder, with forward slashes.
/// </summary>
public sealed record DatasetManifest(
    [property: JsonPropertyName("format")] string Format,
    [property: JsonPropertyName("tokenizer")] string Tokenizer,
    [property: JsonPropertyName("vocab_size")] int VocabSize,
    [property: JsonPropertyName("end_of_text")] int EndOfText,
    [property: JsonPropertyName("column")] string Column,
    [property: JsonPropertyName("train_documents")] long TrainDocuments,
    [property: JsonPropertyName("val_documents")] long ValDocuments,
    [property: JsonPropertyName("train_tokens")] long TrainTokens,
    [property: JsonPropertyName("val_tokens")] long ValTokens,
    [property: JsonPropertyName("train_files")] IReadOnlyList<string> TrainFiles,
    [property: JsonPropertyName("val_files")] IReadOnlyList<string> ValFiles)
{
    public const string FileName = "dataset.json";
    public const string CurrentFormat = "disttrain-tokens-v1";

    static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    public void Write(string dir) => File.WriteAllText(Path.Combine(dir, FileName), JsonSerializer.Serialize(this, Json) + "\n");

    /// <summary>Reads dir/dataset.json; <see cref="DataException"/> when it is missing or unreadable.</summary>
    public static DatasetManifest Read(string dir)
    {
        string path = Path.Combine(dir, FileName);
        if (!File.Exists(path))
            throw new DataException($"{path} not found; is {dir} a folder written by `disttrain prepare`?");
        try
        {
            return JsonSerializer.Deserialize<DatasetManifest>(File.ReadAllText(path), Json)
                ?? throw new DataException($"{path} holds null; re-run `disttrain prepare`");
        }
        catch (JsonException e)
        {
            throw new DataException($"{path} is not a valid {CurrentFormat} manifest ({e.Message}); re-run `disttrain prepare`", e);
        }
    }

    /// <summary>The manifest of the data set that <paramref name="dataPath"/> (a shard, train/, val/ or the set's folder) belongs to, or null.</summary>
    public static DatasetManifest? FindFor(string dataPath)
    {
        var dir = Directory.Exists(dataPath) ? dataPath : Path.GetDirectoryName(dataPath);
        for (int up = 0; up < 2 && dir is not null; up++, dir = Path.GetDirectoryName(dir))
            if (File.Exists(Path.Combine(dir, FileName))) return Read(dir);
        return null;
    }

    /// <summary>Full paths of the train shards of the data set in dir.</summary>
    public IReadOnlyList<string> TrainPaths(string dir) => [.. TrainFiles.Select(f => Path.GetFullPath(Path.Combine(dir, f)))];

    /// <summary>Full paths of the validation shards of the data set in dir.</summary>
    public IReadOnlyList<string> ValPaths(string dir) => [.. ValFiles.Select(f => Path.GetFullPath(Path.Combine(dir, f)))];
}
