using Parquet;
using Parquet.Schema;

namespace DistTrain.Data.Tests;

/// <summary>A fresh folder under /tmp, deleted on dispose.</summary>
sealed class TempDir : IDisposable
{
    public TempDir() => Directory.CreateDirectory(Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "disttrain-data-" + Guid.NewGuid().ToString("N")));
    public string Path { get; }
    public string this[string name] => System.IO.Path.Combine(Path, name);
    public void Dispose() { try { Directory.Delete(Path, recursive: true); } catch (IOException) { } }
}

/// <summary>How a fixture stores its token lists.</summary>
public enum Layout
{
    List,              // 3-level LIST, required element (what prepare writes)
    ListNullable,      // 3-level LIST, optional element (pyarrow's default)
    LegacyRepeated,    // repeated int32 input_ids
}

/// <summary>Parquet files written directly with Parquet.Net, independent of the code under test.</summary>
static class Fixture
{
    /// <summary>Document d: length (d·7) mod 23 (so some are empty), token i = (d·31 + i·17) mod vocab.</summary>
    public static int[][] Documents(int count, int vocab, int offset = 0) =>
        [.. Enumerable.Range(offset, count).Select(d => Enumerable.Range(0, d * 7 % 23).Select(i => (d * 31 + i * 17) % vocab).ToArray())];

    /// <summary>Writes docs as rows of column input_ids after an int64 "id" column; rowGroups cycles the row-group sizes.</summary>
    public static void Write(string path, IReadOnlyList<int[]> docs, int[] rowGroups, CompressionMethod compression = CompressionMethod.Zstd,
        bool int64 = false, Layout layout = Layout.List, string column = "input_ids", EncodingHint encoding = EncodingHint.Default) =>
        Task.Run(() => WriteAsync(path, docs, rowGroups, compression, int64, layout, column, encoding)).GetAwaiter().GetResult();

    static async Task WriteAsync(string path, IReadOnlyList<int[]> docs, int[] rowGroups, CompressionMethod compression,
        bool int64, Layout layout, string column, EncodingHint encoding)
    {
        Type element = (int64, layout) switch
        {
            (false, Layout.ListNullable) => typeof(int?),
            (true, Layout.ListNullable) => typeof(long?),
            (false, _) => typeof(int),
            (true, _) => typeof(long),
        };
        var id = new DataField<long>("id");
        DataField leaf = layout == Layout.LegacyRepeated
            ? new DataField(column, int64 ? typeof(IEnumerable<long>) : typeof(IEnumerable<int>))
            : new DataField("element", element);
        var schema = new ParquetSchema(id, layout == Layout.LegacyRepeated ? leaf : new ListField(column, leaf));

        await using FileStream stream = File.Create(path);
        var options = new ParquetOptions { CompressionMethod = compression };
        options.ColumnEncodingHints[leaf.Path.ToString()] = encoding;
        await using ParquetWriter writer = await ParquetWriter.CreateAsync(schema, stream, options);
        int maxDef = leaf.MaxDefinitionLevel;
        int emptyDef = maxDef - (layout == Layout.ListNullable ? 2 : 1);
        int start = 0;
        for (int g = 0; start < docs.Count; g++)
        {
            int rows = Math.Min(rowGroups[g % rowGroups.Length], docs.Count - start);
            var slice = docs.Skip(start).Take(rows).ToArray();
            var values = slice.SelectMany(d => d).ToArray();
            var defs = new List<int>();
            var reps = new List<int>();
            foreach (int[] d in slice)
            {
                if (d.Length == 0) { defs.Add(emptyDef); reps.Add(0); }
                for (int i = 0; i < d.Length; i++) { defs.Add(maxDef); reps.Add(i == 0 ? 0 : 1); }
            }
            using ParquetRowGroupWriter group = writer.CreateRowGroup();
            await group.WriteAsync<long>(id, Enumerable.Range(start, rows).Select(r => (long)r).ToArray());
            if (int64)
                await group.WriteAllPartsAsync<long>(leaf, values.Select(v => (long)v).ToArray(), defs.ToArray(), reps.ToArray(), default);
            else
                await group.WriteAllPartsAsync<int>(leaf, values, defs.ToArray(), reps.ToArray(), default);
            group.CompleteValidate();
            start += rows;
        }
    }

    /// <summary>The reference packing: concatenate doc + eot per document, cut into windows of seqLen+1, drop the tail, repeat per epoch.</summary>
    public static List<long[]> ExpectedWindows(IEnumerable<int[]> docs, int eot, int seqLen, int epochs = 1)
    {
        var stream = docs.SelectMany(d => d.Select(t => (long)t).Append(eot)).ToArray();
        var windows = new List<long[]>();
        for (int e = 0; e < epochs; e++)
            for (int at = 0; at + seqLen + 1 <= stream.Length; at += seqLen + 1)
                windows.Add(stream[at..(at + seqLen + 1)]);
        return windows;
    }

    public static List<long[]> ReadWindows(TokenWindowReader reader, int count, int seqLen, List<DataCursor>? cursors = null)
    {
        var windows = new List<long[]>();
        var window = new long[seqLen + 1];
        while (windows.Count < count && reader.TryNext(window))
        {
            windows.Add((long[])window.Clone());
            cursors?.Add(reader.Cursor);
        }
        return windows;
    }

    /// <summary>Up to count windows with their global indices and the cursor after each.</summary>
    public static List<(long[] Window, long Global, DataCursor After)> ReadIndexed(TokenWindowReader reader, int seqLen, int count = int.MaxValue)
    {
        var windows = new List<(long[], long, DataCursor)>();
        var window = new long[seqLen + 1];
        while (windows.Count < count && reader.TryNext(window, out long global))
            windows.Add(((long[])window.Clone(), global, reader.Cursor));
        return windows;
    }

    /// <summary>FNV-1a over the tokens, to pin a whole run in one number.</summary>
    public static ulong Checksum(IEnumerable<long[]> windows)
    {
        ulong hash = 14695981039346656037;
        foreach (long[] w in windows)
            foreach (long t in w) { hash ^= (ulong)t; hash *= 1099511628211; }
        return hash;
    }
}
