using Parquet;

namespace DistTrain.Data.Tests;

public class PrepareTests
{
    // documents in input order: a.txt (whole file), b.md (whole file), c.jsonl (three lines, one blank line skipped)
    static readonly string[] Documents =
    [
        "In the beginning God created the heaven and the earth.\nAnd the earth was without form, and void.\n",
        "# Psalm 23\n\nThe LORD is my shepherd; I shall not want.",
        "Jesus wept.",
        "ἐν ἀρχῇ ἦν ὁ λόγος — 🙂",
        "Amen.",
    ];

    static string[] WriteInputs(TempDir dir)
    {
        File.WriteAllText(dir["a.txt"], Documents[0].Replace("\n", "\r\n"));
        File.WriteAllText(dir["b.md"], Documents[1]);
        File.WriteAllLines(dir["c.jsonl"],
        [
            """{"text": "Jesus wept.", "id": 1}""",
            "",
            """{"id": 2, "text": "ἐν ἀρχῇ ἦν ὁ λόγος — \ud83d\ude42"}""",
            """{"text": "Amen."}""",
        ]);
        return [dir["a.txt"], dir["b.md"], dir["c.jsonl"]];
    }

    /// <summary>The documents stored in files, through the reader's own stream, split at end-of-text and decoded.</summary>
    static List<string> ReadBack(IReadOnlyList<string> files, ITokenizer tokenizer)
    {
        using var stream = new TokenStream(new WindowReaderOptions(files, 1, tokenizer.EndOfText, tokenizer.VocabSize));
        stream.Seek(DataCursor.Start, default);
        var buffer = new long[1 << 16];
        int n = stream.Read(buffer, default);
        Assert.True(n < buffer.Length);
        var documents = new List<string>();
        var ids = new List<int>();
        foreach (long id in buffer.AsSpan(0, n))
        {
            if (id != tokenizer.EndOfText) { ids.Add((int)id); continue; }
            documents.Add(tokenizer.Decode(ids));
            ids.Clear();
        }
        Assert.Empty(ids);   // the stream ends with an end-of-text
        return documents;
    }

    [Fact]
    public async Task Prepared_shards_read_back_to_the_original_text()
    {
        using var dir = new TempDir();
        var progress = new List<PrepareProgress>();
        var options = new PrepareOptions(WriteInputs(dir), "byte", dir["out"], ValidationFraction: 0.25, RowsPerRowGroup: 2, TokensPerShard: 60);

        PrepareResult result = ParquetPreparer.Run(options, new SyncProgress(progress.Add));

        // document i goes to validation when ⌊(i+1)/4⌋ > ⌊i/4⌋: document 3 only
        var tokenizer = TokenizerFactory.Create("byte");
        var manifest = DatasetManifest.Read(dir["out"]);
        Assert.Equal([Documents[0], Documents[1], Documents[2], Documents[4]], ReadBack(manifest.TrainPaths(dir["out"]), tokenizer));
        Assert.Equal([Documents[3]], ReadBack(manifest.ValPaths(dir["out"]), tokenizer));

        long Bytes(params int[] docs) => docs.Sum(d => System.Text.Encoding.UTF8.GetByteCount(Documents[d]));
        Assert.Equal((4L, 1L, Bytes(0, 1, 2, 4), Bytes(3)), (result.TrainDocuments, result.ValDocuments, result.TrainTokens, result.ValTokens));
        // 60 tokens per shard: a.txt (97 bytes) fills shard 0, b.md (53) + "Jesus wept." (11) shard 1, "Amen." shard 2
        Assert.Equal(["train/part-00000.parquet", "train/part-00001.parquet", "train/part-00002.parquet"], manifest.TrainFiles);
        Assert.Equal(["val/part-00000.parquet"], manifest.ValFiles);
        Assert.Equal([.. manifest.TrainPaths(dir["out"]), .. manifest.ValPaths(dir["out"])], result.Files);
        Assert.Equal(("byte", 257, 256, "input_ids"), (manifest.Tokenizer, manifest.VocabSize, manifest.EndOfText, manifest.Column));
        Assert.Equal(5, progress[^1].Documents);
        Assert.Equal(progress[^1].BytesTotal, progress[^1].BytesRead);

        await using (ParquetReader shard = await ParquetReader.CreateAsync(result.Files[1]))
        {
            Assert.Equal([2L], shard.RowGroups.Select(g => g.RowCount));   // b.md and "Jesus wept." in one row group of RowsPerRowGroup = 2
            Assert.Equal(Parquet.Meta.CompressionCodec.ZSTD, shard.RowGroups[0].RowGroup.Columns[0].MetaData!.Codec);
        }
        Assert.Equal(["a.txt", "b.md", "c.jsonl", "out"], Directory.EnumerateFileSystemEntries(dir.Path).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void Blank_lines_split_paragraphs_and_two_documents_give_one_to_validation()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["p.txt"], "first line\nsecond line\n\n\n  \r\nthird\r\n\r\n");
        var result = ParquetPreparer.Run(new PrepareOptions([dir["p.txt"]], "byte", dir["out"] + "/", SplitOnBlankLines: true));

        var tokenizer = TokenizerFactory.Create("byte");
        Assert.Equal((1L, 1L), (result.TrainDocuments, result.ValDocuments));   // 0.05 would give none; the last one goes
        Assert.Equal(["first line\nsecond line"], ReadBack(DatasetFiles.Resolve(dir["out/train"]), tokenizer));
        Assert.Equal(["third"], ReadBack(DatasetFiles.Resolve(dir["out/val"]), tokenizer));
    }

    [Fact]
    public void Cl100k_prepare_stores_the_tiktoken_ids()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["h.jsonl"], """{"body": "hello world"}""" + "\n");
        var result = ParquetPreparer.Run(new PrepareOptions([dir["h.jsonl"]], "cl100k_base", dir["out"], TextField: "body"));

        Assert.Equal((1L, 0L, 2L), (result.TrainDocuments, result.ValDocuments, result.TrainTokens));
        using var stream = new TokenStream(new WindowReaderOptions(result.Files, 1, 100257, 100277));
        stream.Seek(DataCursor.Start, default);
        var tokens = new long[8];
        Assert.Equal(3, stream.Read(tokens, default));
        Assert.Equal([15339, 1917, 100257], tokens[..3]);
    }

    [Fact]
    public void Refuses_a_non_empty_output_folder_and_leaves_it_alone()
    {
        using var dir = new TempDir();
        string[] inputs = WriteInputs(dir);
        Directory.CreateDirectory(dir["out"]);
        File.WriteAllText(dir["out/keep.txt"], "mine");

        var e = Assert.Throws<DataException>(() => ParquetPreparer.Run(new PrepareOptions(inputs, "byte", dir["out"])));

        Assert.Contains($"output folder {dir["out"]} is not empty", e.Message);
        Assert.Contains("nothing there is overwritten", e.Message);
        Assert.Equal(["keep.txt"], Directory.EnumerateFileSystemEntries(dir["out"]).Select(Path.GetFileName));
        Assert.Equal("mine", File.ReadAllText(dir["out/keep.txt"]));
        Assert.Equal(4, Directory.EnumerateFileSystemEntries(dir.Path).Count());   // no temporary folder left behind
    }

    [Fact]
    public void Bad_inputs_are_named_and_nothing_is_written()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["blank.txt"], " \n\n\t\n");
        var empty = Assert.Throws<DataException>(() => ParquetPreparer.Run(new PrepareOptions([dir["blank.txt"]], "byte", dir["out"])));
        Assert.Contains("hold no documents", empty.Message);

        File.WriteAllLines(dir["c.jsonl"], ["""{"text": "ok"}""", """{"body": "no text here", "id": 7}"""]);
        var field = Assert.Throws<DataException>(() => ParquetPreparer.Run(new PrepareOptions([dir["c.jsonl"]], "byte", dir["out"])));
        Assert.Contains($"{dir["c.jsonl"]}:2: no \"text\" field (fields: body, id); pass --text-field NAME", field.Message);

        File.WriteAllText(dir["d.csv"], "text\n");
        var ext = Assert.Throws<DataException>(() => ParquetPreparer.Run(new PrepareOptions([dir["d.csv"]], "byte", dir["out"])));
        Assert.Contains("unknown extension '.csv'", ext.Message);

        Assert.Throws<DataException>(() => ParquetPreparer.Run(new PrepareOptions([], "byte", dir["out"])));
        Assert.Throws<ArgumentException>(() => ParquetPreparer.Run(new PrepareOptions([dir["c.jsonl"]], "gpt2", dir["out"])));
        Assert.Equal(["blank.txt", "c.jsonl", "d.csv"], Directory.EnumerateFileSystemEntries(dir.Path).Select(Path.GetFileName).Order());
    }

    /// <summary>Reports on the calling thread (Progress&lt;T&gt; would post to the pool).</summary>
    sealed class SyncProgress(Action<PrepareProgress> report) : IProgress<PrepareProgress>
    {
        public void Report(PrepareProgress value) => report(value);
    }
}
