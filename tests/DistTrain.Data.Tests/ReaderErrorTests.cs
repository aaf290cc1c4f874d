using System.Diagnostics;
using Parquet;
using Parquet.Schema;

namespace DistTrain.Data.Tests;

/// <summary>Every way the reader refuses data says which file and what to do.</summary>
public class ReaderErrorTests
{
    static WindowReaderOptions Options(string file, int seqLen = 2, int vocab = 600, string column = "input_ids") =>
        new([file], seqLen, 0, vocab, column);

    [Fact]
    public void Missing_column_lists_the_columns_and_the_fix()
    {
        using var dir = new TempDir();
        Fixture.Write(dir["a.parquet"], [[1, 2, 3]], [1], column: "tokens");
        var e = Assert.Throws<DataException>(() => new TokenWindowReader(Options(dir["a.parquet"])));
        Assert.Contains(dir["a.parquet"], e.Message);
        Assert.Contains("has no column 'input_ids'", e.Message);
        Assert.Contains("id (int64), tokens (list<int32>)", e.Message);
        Assert.Contains("--set data.column=NAME", e.Message);
        Assert.Contains("disttrain prepare", e.Message);
    }

    [Fact]
    public void Column_of_the_wrong_type_says_what_was_found()
    {
        using var dir = new TempDir();
        var ids = new DataField<int>("input_ids");
        WriteSingle(dir["scalar.parquet"], ids, g => g.WriteAsync<int>(ids, new[] { 1, 2 }));
        var scalar = Assert.Throws<DataException>(() => new TokenWindowReader(Options(dir["scalar.parquet"])));
        Assert.Contains("column 'input_ids' is int32; a list of int32 or int64", scalar.Message);

        var element = new DataField<double>("element");
        WriteSingle(dir["doubles.parquet"], new ListField("input_ids", element),
            g => g.WriteAllPartsAsync<double>(element, new[] { 1.0, 2.0 }, new[] { 2, 2 }, new[] { 0, 1 }, default));
        var doubles = Assert.Throws<DataException>(() => new TokenWindowReader(Options(dir["doubles.parquet"])));
        Assert.Contains(dir["doubles.parquet"], doubles.Message);
        Assert.Contains("column 'input_ids' is list<double>; a list of int32 or int64", doubles.Message);
    }

    [Fact]
    public void Token_outside_the_vocabulary_surfaces_from_the_background_thread()
    {
        using var dir = new TempDir();
        // row group 0: [1,2] [3]; row group 1: [4] [5,700]: the constructor decodes only row group 0
        Fixture.Write(dir["a.parquet"], [[1, 2], [3], [4], [5, 700]], [2]);
        using var reader = new TokenWindowReader(Options(dir["a.parquet"]));
        var window = new long[3];
        Assert.True(reader.TryNext(window));   // [1, 2, 0]
        var e = Assert.Throws<DataException>(() => { while (reader.TryNext(window)) { } });
        Assert.Contains(dir["a.parquet"], e.Message);
        Assert.Contains("row group 1, row 1: token id 700 is outside the vocabulary [0, 600)", e.Message);
        Assert.Contains("tokenizer", e.Message);
        Assert.Throws<DataException>(() => reader.TryNext(window));   // stays failed, never hangs
    }

    [Fact]
    public void Negative_int64_token_is_refused()
    {
        using var dir = new TempDir();
        Fixture.Write(dir["a.parquet"], [[1, 2, 3, 4], [-3]], [1], int64: true);
        using var reader = new TokenWindowReader(Options(dir["a.parquet"]));
        var e = Assert.Throws<DataException>(() => { while (reader.TryNext(new long[3])) { } });
        Assert.Contains("row group 1, row 0: token id -3", e.Message);
    }

    [Fact]
    public void Empty_data_sets_say_how_many_tokens_a_window_needs()
    {
        using var dir = new TempDir();
        var none = Assert.Throws<DataException>(() => new TokenWindowReader(new WindowReaderOptions([], 8, 0, 10)));
        Assert.Contains("no files", none.Message);

        Fixture.Write(dir["small.parquet"], [[1, 2], [3]], [1]);
        var small = Assert.Throws<DataException>(() => new TokenWindowReader(Options(dir["small.parquet"], seqLen: 8)));
        Assert.Contains("holds 5 tokens", small.Message);
        Assert.Contains("SeqLen+1 = 9", small.Message);

        WriteSingle(dir["empty.parquet"], new ListField("input_ids", new DataField<int>("element")), null);
        var empty = Assert.Throws<DataException>(() => new TokenWindowReader(Options(dir["empty.parquet"])));
        Assert.Contains("holds 0 tokens", empty.Message);
    }

    [Fact]
    public void Not_a_parquet_file_is_named()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["a.parquet"], "In the beginning");
        var e = Assert.Throws<DataException>(() => new TokenWindowReader(Options(dir["a.parquet"])));
        Assert.Contains($"{dir["a.parquet"]}: cannot open as Parquet", e.Message);
    }

    [Fact]
    public void Cursor_that_does_not_fit_the_files_is_refused()
    {
        using var dir = new TempDir();
        Fixture.Write(dir["a.parquet"], Fixture.Documents(40, 500), [30]);   // row groups of 30 and 10 rows
        WindowReaderOptions options = Options(dir["a.parquet"]);
        string Refusal(DataCursor c) => Assert.Throws<DataException>(() => new TokenWindowReader(options, c)).Message;

        Assert.Contains("file index 5, but there are 1 file(s)", Refusal(new DataCursor(0, 5, 0, 0, 0, 0)));
        Assert.Contains("row group 3, but", Refusal(new DataCursor(0, 0, 3, 0, 0, 0)));
        Assert.Contains("row 11, but row group 1", Refusal(new DataCursor(0, 0, 1, 11, 0, 0)));
        string token = Refusal(new DataCursor(0, 0, 0, 1, 8, 0));   // document 1 has 7 tokens: positions 0..7
        Assert.Contains("token 8, but row 1 of row group 0", token);
        Assert.Contains("same data path", token);
    }

    [Fact]
    public void Dispose_stops_the_read_ahead_promptly()
    {
        using var dir = new TempDir();
        Fixture.Write(dir["a.parquet"], Fixture.Documents(5000, 500), [1000]);
        var reader = new TokenWindowReader(Options(dir["a.parquet"], seqLen: 4) with { ReadAhead = 2 });
        Assert.True(reader.TryNext(new long[5]));
        var clock = Stopwatch.StartNew();
        reader.Dispose();
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2), $"Dispose took {clock.Elapsed}");
        Assert.Throws<ObjectDisposedException>(() => reader.TryNext(new long[5]));
        using var other = new TokenWindowReader(Options(dir["a.parquet"], seqLen: 4));
        Assert.Contains("SeqLen+1 = 5", Assert.Throws<ArgumentException>(() => other.TryNext(new long[4])).Message);
    }

    static void WriteSingle(string path, Field field, Func<ParquetRowGroupWriter, Task>? write) => Task.Run(async () =>
    {
        await using FileStream stream = File.Create(path);
        await using ParquetWriter writer = await ParquetWriter.CreateAsync(new ParquetSchema(field), stream);
        if (write is null) return;
        using ParquetRowGroupWriter group = writer.CreateRowGroup();
        await write(group);
    }).GetAwaiter().GetResult();
}
