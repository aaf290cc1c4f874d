namespace DistTrain.Data;

/// <summary>Text to token ids and back. Ids lie in [0, VocabSize); EndOfText separates documents.</summary>
public interface ITokenizer
{
    string Name { get; }
    /// <summary>Max id + 1, special tokens included: the embedding table needs this many rows.</summary>
    int VocabSize { get; }
    int EndOfText { get; }
    IReadOnlyList<int> Encode(string text);
    string Decode(IEnumerable<int> ids);
}
