namespace DistTrain.Data;

/// <summary>Tokenizers by the name that dataset.json and the config carry.</summary>
public static class TokenizerFactory
{
    public static readonly IReadOnlyList<string> Names = [ByteTokenizer.TokenizerName, "cl100k_base", "o200k_base"];

    public static ITokenizer Create(string name) => name switch
    {
        ByteTokenizer.TokenizerName => new ByteTokenizer(),
        "cl100k_base" or "o200k_base" => new TiktokenAdapter(name),
        _ => throw new ArgumentException(
            $"unknown tokenizer '{name}'; use one of: {string.Join(", ", Names)}", nameof(name)),
    };
}
