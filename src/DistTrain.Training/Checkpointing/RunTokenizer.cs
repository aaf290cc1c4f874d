using DistTrain.Checkpoint;
using DistTrain.Data;
using DistTrain.Training.Config;

namespace DistTrain.Training.Checkpointing;

/// <summary>
/// The tokenizer a checkpoint's run was trained with: the name its manifest records (the dataset.json of
/// data.train, <see cref="CheckpointSaver"/>), or for older checkpoints the dataset.json that an absolute
/// data.train in its config still points at. The same lookup as training's (<see cref="DatasetManifest.FindFor"/>)
/// and prepare's (<see cref="TokenizerFactory"/>).
/// </summary>
public static class RunTokenizer
{
    /// <summary>The manifest's extra key that names the tokenizer.</summary>
    public const string ManifestKey = "tokenizer";

    /// <summary>The dataset.json tokenizer of the run's training data, or null when no dataset.json says it.</summary>
    public static string? NameFor(DataOptions data) => DatasetManifest.FindFor(data.Train)?.Tokenizer;

    /// <summary>
    /// The tokenizer of the checkpoint in <paramref name="dir"/>; <paramref name="overrideName"/> (the user's choice) wins.
    /// Checked against the model: every id it produces must have an embedding row.
    /// </summary>
    public static ITokenizer For(string dir, CheckpointManifest manifest, Dictionary<string, object?> tree, int vocabSize, string? overrideName)
    {
        var name = overrideName ?? manifest.Extra.GetValueOrDefault(ManifestKey) ?? FromConfig(tree)
            ?? throw new CheckpointException($"{dir}: the checkpoint does not name its tokenizer and its data.train has no dataset.json to ask; " +
                $"pass --tokenizer ({string.Join(", ", TokenizerFactory.Names)})");
        var where = overrideName is null ? $"{dir}: tokenizer {name}" : $"--tokenizer {name}";
        ITokenizer tokenizer;
        try { tokenizer = TokenizerFactory.Create(name); }
        catch (ArgumentException) { throw new CheckpointException($"{where}: not known; use one of {string.Join(", ", TokenizerFactory.Names)}"); }
        if (tokenizer.VocabSize > vocabSize)
            throw new CheckpointException($"{where}: {tokenizer.VocabSize} ids, the model's vocab_size is {vocabSize}; pass the --tokenizer the run was trained with");
        return tokenizer;
    }

    /// <summary>data.train of a checkpoint's config, when it is absolute and its dataset.json is still there.</summary>
    static string? FromConfig(Dictionary<string, object?> tree)
    {
        if (tree.GetValueOrDefault("data") is not Dictionary<string, object?> data || data.GetValueOrDefault("train") is not string train) return null;
        if (!Path.IsPathRooted(train)) return null;   // relative to a config file whose folder the checkpoint does not know
        try { return DatasetManifest.FindFor(train)?.Tokenizer; }
        catch (DataException) { return null; }
    }
}
