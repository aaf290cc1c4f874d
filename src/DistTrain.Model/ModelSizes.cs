namespace DistTrain.Model;

/// <summary>
/// Named sizes (gpt-fast style: sizes are data). The paper's Table 2 sizes use its vocabulary
/// (50432, GPT-NeoX padded); the tiny size uses the byte tokenizer (257 ids, padded to 264).
/// </summary>
public static class ModelSizes
{
    static readonly Dictionary<string, ModelConfig> Table = new(StringComparer.OrdinalIgnoreCase)
    {
        ["tiny"] = new() { VocabSize = 264, BlockSize = 256, Dim = 64, NLayer = 4, NHead = 4, IntermediateSize = 192 },
        ["125m"] = new() { VocabSize = 100352, BlockSize = 2048, Dim = 768, NLayer = 12, NHead = 12 },
        ["405m"] = new() { VocabSize = 50432, BlockSize = 2048, Dim = 1024, NLayer = 24, NHead = 16 },
        ["834m"] = new() { VocabSize = 50432, BlockSize = 2048, Dim = 1536, NLayer = 24, NHead = 24 },
        ["1.4b"] = new() { VocabSize = 50432, BlockSize = 2048, Dim = 2048, NLayer = 24, NHead = 32 },
    };

    public static IReadOnlyCollection<string> Names => Table.Keys;

    public static bool TryGet(string name, out ModelConfig config) => Table.TryGetValue(name, out config!);
}
