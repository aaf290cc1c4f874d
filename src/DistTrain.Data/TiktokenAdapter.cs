using Microsoft.ML.Tokenizers;

namespace DistTrain.Data;

/// <summary>
/// A Microsoft.ML.Tokenizers tiktoken encoding (cl100k_base, o200k_base) behind <see cref="ITokenizer"/>.
/// A literal "&lt;|endoftext|&gt;" inside a document encodes to the special id, as in Microsoft.ML.Tokenizers.
/// </summary>
sealed class TiktokenAdapter : ITokenizer
{
    const string EndOfTextText = "<|endoftext|>";
    readonly TiktokenTokenizer _tokenizer;

    public TiktokenAdapter(string encoding)
    {
        _tokenizer = TiktokenTokenizer.CreateForEncoding(encoding);
        Name = encoding;
        IReadOnlyDictionary<string, int> specials = _tokenizer.SpecialTokens
            ?? throw new InvalidOperationException($"{encoding}: the tokenizer has no special tokens; cannot find {EndOfTextText}");
        EndOfText = specials.TryGetValue(EndOfTextText, out int eot)
            ? eot
            : throw new InvalidOperationException($"{encoding}: no {EndOfTextText} among its special tokens");
        // The specials sit above every ordinary rank (cl100k: ranks 0..100255, specials up to 100276;
        // o200k: 0..199997, specials up to 200018), so the largest special id bounds the vocabulary.
        VocabSize = specials.Values.Max() + 1;
    }

    public string Name { get; }
    public int VocabSize { get; }
    public int EndOfText { get; }

    public IReadOnlyList<int> Encode(string text) => _tokenizer.EncodeToIds(text);
    public string Decode(IEnumerable<int> ids) => _tokenizer.Decode(ids);
}
