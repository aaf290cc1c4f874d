using System.IO.Compression;
using Parquet;
using Parquet.Schema;

namespace DistTrain.Data;

/// <summary>
/// Writes one split's documents as dir/part-00000.parquet, part-00001.parquet, ...: one row per document, a single
/// column input_ids = list&lt;int32&gt; (3-level LIST, required elements), zstd, rowsPerRowGroup rows per row group.
/// A shard closes after the document that takes it to tokensPerShard tokens.
/// </summary>
sealed class ShardWriter : IAsyncDisposable
{
    public const string Column = "input_ids";

    static readonly ParquetOptions Options = new()
    {
        CompressionMethod = CompressionMethod.Zstd,
        CompressionLevel = CompressionLevel.Optimal,   // zstd 3; SmallestSize (19) is ~10x slower for ~10% less
    };

    readonly string _dir;
    readonly int _rowsPerRowGroup;
    readonly long _tokensPerShard;
    readonly DataField _field = new DataField<int>("element");
    readonly ParquetSchema _schema;
    readonly List<int[]> _rows = [];
    readonly List<string> _files = [];
    FileStream? _stream;
    ParquetWriter? _writer;
    long _shardTokens;

    public ShardWriter(string dir, int rowsPerRowGroup, long tokensPerShard)
    {
        if (rowsPerRowGroup < 1)
            throw new ArgumentOutOfRangeException(nameof(rowsPerRowGroup), rowsPerRowGroup, "rows per row group must be at least 1");
        if (tokensPerShard < 1)
            throw new ArgumentOutOfRangeException(nameof(tokensPerShard), tokensPerShard, "tokens per shard must be at least 1");
        _dir = dir;
        _rowsPerRowGroup = rowsPerRowGroup;
        _tokensPerShard = tokensPerShard;
        _schema = new ParquetSchema(new ListField(Column, _field));
        Directory.CreateDirectory(dir);
    }

    public IReadOnlyList<string> Files => _files;
    public long Documents { get; private set; }
    public long Tokens { get; private set; }

    public async Task AddAsync(int[] tokens, CancellationToken ct)
    {
        _rows.Add(tokens);
        Documents++;
        Tokens += tokens.Length;
        _shardTokens += tokens.Length;
        if (_rows.Count == _rowsPerRowGroup) await FlushRowGroupAsync(ct);
        if (_shardTokens >= _tokensPerShard) await CloseShardAsync(ct);
    }

    /// <summary>Writes what is buffered and closes the last shard.</summary>
    public async Task CompleteAsync(CancellationToken ct) => await CloseShardAsync(ct);

    async Task FlushRowGroupAsync(CancellationToken ct)
    {
        if (_rows.Count == 0) return;
        if (_writer is null)
        {
            string path = Path.Combine(_dir, $"part-{_files.Count:D5}.parquet");
            _stream = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 16);
            _writer = await ParquetWriter.CreateAsync(_schema, _stream, Options, false, ct);
            _files.Add(path);
        }

        // (tokens) values; (tokens + empty rows) levels: repetition 0 opens a row, definition max = a present
        // value, max−1 = an empty list (list defined, no element)
        int entries = _rows.Sum(r => Math.Max(r.Length, 1));
        var values = new int[_rows.Sum(r => r.Length)];
        var definitions = new int[entries];
        var repetitions = new int[entries];
        int maxDef = _field.MaxDefinitionLevel, v = 0, e = 0;
        foreach (int[] row in _rows)
        {
            if (row.Length == 0) { definitions[e] = maxDef - 1; repetitions[e++] = 0; continue; }
            row.CopyTo(values, v);
            v += row.Length;
            for (int i = 0; i < row.Length; i++) { definitions[e] = maxDef; repetitions[e++] = i == 0 ? 0 : 1; }
        }
        using (ParquetRowGroupWriter group = _writer.CreateRowGroup())
        {
            await group.WriteAllPartsAsync<int>(_field, values, definitions.AsMemory(), repetitions.AsMemory(), ct);
            group.CompleteValidate();
        }
        _rows.Clear();
    }

    async Task CloseShardAsync(CancellationToken ct)
    {
        await FlushRowGroupAsync(ct);
        if (_writer is not null) await _writer.DisposeAsync();
        if (_stream is not null) await _stream.DisposeAsync();
        (_writer, _stream, _shardTokens) = (null, null, 0);
    }

    public async ValueTask DisposeAsync()
    {
        if (_writer is not null) await _writer.DisposeAsync();
        if (_stream is not null) await _stream.DisposeAsync();
    }
}
