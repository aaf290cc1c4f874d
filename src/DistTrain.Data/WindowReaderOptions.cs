namespace DistTrain.Data;

/// <summary>
/// What <see cref="TokenWindowReader"/> reads: the Parquet files in order (see <see cref="DatasetFiles.Resolve"/>),
/// windows of SeqLen+1 tokens (inputs and shifted targets), the end-of-text id appended after each document,
/// and the vocabulary size every id is checked against.
/// </summary>
/// <param name="ReadAhead">Windows the background thread may prepare before the consumer takes them.</param>
/// <param name="Range">This rank's share of each epoch's global window sequence (<see cref="WindowRange.ForRank"/>);
/// null reads the whole sequence. With a range every epoch yields exactly windows [First, First+Count).</param>
public sealed record WindowReaderOptions(
    IReadOnlyList<string> Files,
    int SeqLen,
    int EndOfText,
    int VocabSize,
    string Column = "input_ids",
    bool Loop = true,
    int ReadAhead = 64,
    WindowRange? Range = null)
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
        if (Range is { First: < 0 } or { Count: < 1 })
            throw new ArgumentOutOfRangeException(nameof(Range), Range,
                "Range must start at window 0 or later and hold at least one window; take it from WindowRange.ForRank");
        if (Files.Count == 0) throw EpochLayout.NoFiles();
    }
}
