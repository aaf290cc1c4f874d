namespace DistTrain.Data;

/// <summary>
/// What <see cref="ParquetPreparer.Run"/> turns into a tokenized data set. Inputs are .txt/.text/.md files (one
/// document per file, or per blank-line-separated paragraph with SplitOnBlankLines) and .jsonl files (one document
/// per line, the string field TextField). Shards start afresh after TokensPerShard tokens.
/// </summary>
public sealed record PrepareOptions(
    IReadOnlyList<string> Inputs,
    string Tokenizer,
    string OutDir,
    double ValidationFraction = 0.05,
    string TextField = "text",
    int RowsPerRowGroup = 1024,
    long TokensPerShard = 50_000_000,
    bool SplitOnBlankLines = false);

/// <summary>Progress so far: documents and tokens written, input bytes consumed of the total.</summary>
public sealed record PrepareProgress(long Documents, long Tokens, long BytesRead, long BytesTotal);

/// <summary>
/// What was written. Tokens count document tokens only; the reader adds one end-of-text per document.
/// Files are full paths: OutDir/train/part-00000.parquet, ..., OutDir/val/part-00000.parquet, ...
/// </summary>
public sealed record PrepareResult(
    string OutDir,
    long TrainDocuments,
    long ValDocuments,
    long TrainTokens,
    long ValTokens,
    IReadOnlyList<string> Files);
