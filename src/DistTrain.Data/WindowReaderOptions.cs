namespace DistTrain.Data;

/// <summary>
/// What <see cref="TokenWindowReader"/> reads: the Parquet files in order (see <see cref="DatasetFiles.Resolve"/>),
/// windows of SeqLen+1 tokens (inputs and shifted targets), the end-of-text id appended after each document,
/// and the vocabulary size every id is checked against.
/// </summary>
/// <param name="ReadAhead">Windows the background thread may prepare before the consumer takes them.</param>
public sealed record WindowReaderOptions(
    IReadOnlyList<string> Files,
    int SeqLen,
    int EndOfText,
    int VocabSize,
    string Column = "input_ids",
    bool Loop = true,
    int ReadAhead = 64)
{
    internal void Validate()
    {
        if (SeqLen < 1) throw new ArgumentOutOfRangeException(nameof(SeqLen), SeqLen, "SeqLen must be at least 1");
        if (VocabSize < 1) throw new ArgumentOutOfRangeException(nameof(VocabSize), VocabSize, "VocabSize must be at least 1");
        if (EndOfText < 0 || EndOfText >= VocabSize)
            throw new ArgumentOutOfRangeException(nameof(EndOfText), EndOfText,
                $"EndOfText must lie in [0, VocabSize={VocabSize}); check the tokenizer's end_of_text in dataset.json");
        if (ReadAhead < 1) throw new ArgumentOutOfRangeException(nameof(ReadAhead), ReadAhead, "ReadAhead must be at least 1");
        if (string.IsNullOrEmpty(Column)) throw new ArgumentException("Column must name the token column, e.g. input_ids", nameof(Column));
        if (Files.Count == 0)
            throw new DataException("the data set has no files; point data.path at a .parquet file, a folder holding some, or a glob, "
                + "or create one with `disttrain prepare`");
    }
}
