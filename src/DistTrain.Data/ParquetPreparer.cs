using System.Diagnostics;

namespace DistTrain.Data;

/// <summary>
/// `disttrain prepare`: tokenizes text/JSONL documents into OutDir/train/part-NNNNN.parquet, OutDir/val/... and
/// OutDir/dataset.json. Writes into a temporary folder beside OutDir and renames it at the end, so OutDir is either
/// absent or complete; refuses an OutDir that already holds anything.
/// </summary>
public static class ParquetPreparer
{
    const int BatchDocuments = 1024;          // tokenized in parallel, written in order
    const long BatchChars = 16 << 20;
    static readonly TimeSpan ProgressEvery = TimeSpan.FromMilliseconds(250);

    public static PrepareResult Run(PrepareOptions options, IProgress<PrepareProgress>? progress = null, CancellationToken ct = default)
    {
        ITokenizer tokenizer = TokenizerFactory.Create(options.Tokenizer);
        ValidationSplit.Check(options.ValidationFraction);
        if (string.IsNullOrWhiteSpace(options.OutDir)) throw new ArgumentException("prepare needs an output folder (--out DIR)", nameof(options));
        if (string.IsNullOrEmpty(options.TextField)) throw new ArgumentException("the JSONL text field is empty; pass --text-field NAME", nameof(options));
        if (options.RowsPerRowGroup < 1 || options.TokensPerShard < 1)
            throw new ArgumentException($"RowsPerRowGroup ({options.RowsPerRowGroup}) and TokensPerShard ({options.TokensPerShard}) must be at least 1", nameof(options));
        long bytesTotal = DocumentSource.Check(options.Inputs);
        string outDir = Path.TrimEndingDirectorySeparator(Path.GetFullPath(options.OutDir));   // "out/" names out, not a child
        CheckOutDir(outDir);

        string temp = Path.Combine(Path.GetDirectoryName(outDir) ?? ".", $".{Path.GetFileName(outDir)}.tmp-{Guid.NewGuid():N}");
        try
        {
            // Parquet.Net is async-only; a pool thread keeps a caller's synchronization context out of it.
            DatasetManifest manifest = Task.Run(() => WriteAsync(options, tokenizer, temp, bytesTotal, progress, ct), ct)
                .GetAwaiter().GetResult();
            if (Directory.Exists(outDir)) Directory.Delete(outDir);   // empty, checked above
            Directory.Move(temp, outDir);
            return new PrepareResult(outDir, manifest.TrainDocuments, manifest.ValDocuments, manifest.TrainTokens, manifest.ValTokens,
                [.. manifest.TrainPaths(outDir), .. manifest.ValPaths(outDir)]);
        }
        catch
        {
            try { if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true); }
            catch (IOException) { /* leave the temp folder; the original error matters more */ }
            throw;
        }
    }

    static void CheckOutDir(string outDir)
    {
        if (File.Exists(outDir))
            throw new DataException($"output {outDir} is a file; prepare writes a folder there, so pick another --out");
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
            throw new DataException($"output folder {outDir} is not empty; prepare only writes a new or empty folder so nothing "
                + "there is overwritten. Pick another --out, or remove that folder yourself.");
    }

    static async Task<DatasetManifest> WriteAsync(PrepareOptions options, ITokenizer tokenizer, string dir, long bytesTotal,
        IProgress<PrepareProgress>? progress, CancellationToken ct)
    {
        await using var train = new ShardWriter(Path.Combine(dir, "train"), options.RowsPerRowGroup, options.TokensPerShard);
        await using var val = new ShardWriter(Path.Combine(dir, "val"), options.RowsPerRowGroup, options.TokensPerShard);
        long bytesRead = 0, index = 0;
        var clock = Stopwatch.StartNew();
        TimeSpan reported = TimeSpan.Zero;
        void Report(bool force)
        {
            if (progress is null || (!force && clock.Elapsed - reported < ProgressEvery)) return;
            reported = clock.Elapsed;
            progress.Report(new PrepareProgress(train.Documents + val.Documents, train.Tokens + val.Tokens, bytesRead, bytesTotal));
        }

        // The last document waits here: when the split gave validation nothing, it becomes the one validation document.
        (int[] Tokens, bool Val)? held = null;
        var batch = new List<string>();
        long batchChars = 0;
        async Task FlushAsync()
        {
            var encoded = new int[batch.Count][];
            Parallel.For(0, batch.Count, new ParallelOptions { CancellationToken = ct },
                i =>
                {
                    IReadOnlyList<int> ids = tokenizer.Encode(batch[i]);
                    encoded[i] = ids as int[] ?? [.. ids];
                });
            foreach (int[] tokens in encoded)
            {
                if (held is { } h) await (h.Val ? val : train).AddAsync(h.Tokens, ct);
                held = (tokens, ValidationSplit.IsValidation(index++, options.ValidationFraction));
                Report(force: false);
            }
            batch.Clear();
            batchChars = 0;
        }

        foreach (string document in DocumentSource.Read(options.Inputs, options.TextField, options.SplitOnBlankLines, b => bytesRead = b, ct))
        {
            batch.Add(document);
            batchChars += document.Length;
            if (batch.Count == BatchDocuments || batchChars >= BatchChars) await FlushAsync();
        }
        await FlushAsync();

        if (held is not { } last)
            throw new DataException($"the inputs ({string.Join(", ", options.Inputs)}) hold no documents (only empty or blank text); "
                + "check the files, and for .jsonl the --text-field");
        bool lastToVal = last.Val || (options.ValidationFraction > 0 && val.Documents == 0 && index >= 2);
        await (lastToVal ? val : train).AddAsync(last.Tokens, ct);
        await train.CompleteAsync(ct);
        await val.CompleteAsync(ct);
        Report(force: true);

        string Relative(string path) => Path.GetRelativePath(dir, path).Replace('\\', '/');
        var manifest = new DatasetManifest(DatasetManifest.CurrentFormat, tokenizer.Name, tokenizer.VocabSize, tokenizer.EndOfText,
            ShardWriter.Column, train.Documents, val.Documents, train.Tokens, val.Tokens,
            [.. train.Files.Select(Relative)], [.. val.Files.Select(Relative)]);
        manifest.Write(dir);
        return manifest;
    }
}
