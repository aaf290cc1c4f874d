using Parquet;
using Parquet.Schema;

namespace DistTrain.Data;

/// <summary>
/// One Parquet file's token column: the schema is checked when it opens, row groups are decoded one at a time
/// into <see cref="RowGroupTokens"/>. The column is a list of int32 or int64 (3-level LIST or a legacy repeated
/// field), any compression and encoding Parquet.Net reads.
/// </summary>
sealed class TokenFile : IDisposable
{
    readonly ParquetReader _reader;
    readonly DataField _field;
    readonly bool _int64;
    readonly bool _optionalIds;   // the element may be null: definition max−1 then means a null id, not an empty list
    readonly int _vocabSize;
    // decode buffers, grown to the largest row group seen: (values), (values), (values)
    int[] _ints = [], _definitions = [], _repetitions = [];
    long[] _longs = [];

    TokenFile(string path, ParquetReader reader, DataField field, int vocabSize)
    {
        Path = path;
        _reader = reader;
        _field = field;
        _int64 = field.ClrType == typeof(long);
        // from the file's schema element: Parquet.Net reports a legacy `repeated int32` field as nullable
        _optionalIds = field.SchemaElement?.RepetitionType == Parquet.Meta.FieldRepetitionType.OPTIONAL;
        _vocabSize = vocabSize;
    }

    public string Path { get; }
    public int RowGroupCount => _reader.RowGroupCount;
    public long RowCount(int rowGroup) => _reader.OpenRowGroupReader(rowGroup).RowCount;

    public static TokenFile Open(string path, string column, int vocabSize, CancellationToken ct = default)
    {
        ParquetReader reader;
        try
        {
            reader = SyncOverAsync.Get(() => ParquetReader.CreateAsync(path, null, ct));
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw new DataException($"{path}: cannot open as Parquet ({e.Message}); is it a file written by `disttrain prepare`?", e);
        }
        try
        {
            return new TokenFile(path, reader, FindColumn(path, reader.Schema, column), vocabSize);
        }
        catch
        {
            SyncOverAsync.Wait(reader.DisposeAsync);
            throw;
        }
    }

    static DataField FindColumn(string path, ParquetSchema schema, string column)
    {
        Field? top = schema.Fields.FirstOrDefault(f => f.Name == column);
        if (top is null)
            throw new DataException(
                $"{path} has no column '{column}'; its columns are: {string.Join(", ", schema.Fields.Select(f => $"{f.Name} ({Describe(f)})"))}. "
                + "Name the token column with `--set data.column=NAME`, or re-run `disttrain prepare` to write input_ids.");
        DataField? leaf = top switch
        {
            ListField { Item: DataField item } => item,
            DataField repeated when repeated.MaxRepetitionLevel > 0 => repeated,
            _ => null,
        };
        if (leaf is null || (leaf.ClrType != typeof(int) && leaf.ClrType != typeof(long)))
            throw new DataException(
                $"{path}: column '{column}' is {Describe(top)}; a list of int32 or int64 token ids (one list per document) is expected. "
                + "Name another column with `--set data.column=NAME`, or re-run `disttrain prepare`.");
        return leaf;
    }

    static string Describe(Field field) => field switch
    {
        ListField { Item: DataField item } => $"list<{TypeName(item.ClrType)}>",
        ListField { Item: var item } => $"list<{Describe(item)}>",
        DataField { MaxRepetitionLevel: > 0 } d => $"repeated {TypeName(d.ClrType)}",
        DataField d => TypeName(d.ClrType),
        _ => field.SchemaType.ToString().ToLowerInvariant(),
    };

    static string TypeName(Type t) => t == typeof(int) ? "int32"
        : t == typeof(long) ? "int64"
        : t == typeof(short) ? "int16"
        : t == typeof(sbyte) ? "int8"
        : t == typeof(byte) ? "uint8"
        : t == typeof(uint) ? "uint32"
        : t == typeof(ulong) ? "uint64"
        : t == typeof(float) ? "float"
        : t == typeof(double) ? "double"
        : t == typeof(string) ? "string"
        : t == typeof(byte[]) ? "binary"
        : t.Name;

    /// <summary>
    /// Tokens in one row group from footer metadata, one end-of-text per row included: values − null/empty entries + rows.
    /// Exact when the footer's null count covers empty lists (Parquet.Net, `disttrain prepare` and arrow-rs files);
    /// an upper bound when a writer leaves empty documents out of it or writes no statistics for a row group with some.
    /// </summary>
    public long TokensFromMetadata(int rowGroup)
    {
        ParquetRowGroupReader group = _reader.OpenRowGroupReader(rowGroup);
        Parquet.Meta.ColumnMetaData? meta = group.GetMetadata(_field)?.MetaData;
        return (meta?.NumValues ?? 0) - (meta?.Statistics?.NullCount ?? 0) + group.RowCount;
    }

    /// <summary>Decodes one row group into into; every id is checked against the vocabulary.</summary>
    public void Read(int rowGroup, RowGroupTokens into, CancellationToken ct)
    {
        ParquetRowGroupReader group = _reader.OpenRowGroupReader(rowGroup);
        int rows = checked((int)group.RowCount);
        int n = checked((int)(group.GetMetadata(_field)?.MetaData?.NumValues
            ?? throw new DataException($"{Path}: row group {rowGroup} has no data for column '{_field.Path}'; the file is damaged, re-run `disttrain prepare`")));
        int maxDef = _field.MaxDefinitionLevel;
        Grow(ref _definitions, n);
        Grow(ref _repetitions, n);
        if (_int64) Grow(ref _longs, n); else Grow(ref _ints, n);

        try
        {
            Memory<int>? definitions = maxDef > 0 ? _definitions.AsMemory(0, n) : null;
            SyncOverAsync.Wait(() => _int64
                ? group.ReadRawAsync(_field, _longs.AsMemory(0, n), definitions, _repetitions.AsMemory(0, n), ct)
                : group.ReadRawAsync(_field, _ints.AsMemory(0, n), definitions, _repetitions.AsMemory(0, n), ct));
        }
        catch (Exception e) when (e is not OperationCanceledException and not DataException)
        {
            throw new DataException($"{Path}: row group {rowGroup}: cannot decode column '{_field.Path}' ({e.Message}); the file may be damaged, re-run `disttrain prepare`", e);
        }

        into.Reset(rows, n);
        // Levels → documents: repetition 0 opens a row; definition == max carries a value; max−1 on a nullable
        // optional element is a null id; anything lower is an empty or null list (a document of no tokens).
        int row = -1, value = 0, token = 0;
        for (int i = 0; i < n; i++)
        {
            if (_repetitions[i] == 0)
            {
                if (++row >= rows) break;
                into.Offsets[row] = token;
            }
            if (row < 0) throw Damaged(rowGroup, "the first value continues a list");
            int def = maxDef > 0 ? _definitions[i] : maxDef;
            if (def == maxDef)
            {
                long id = _int64 ? _longs[value] : _ints[value];
                value++;
                if ((ulong)id >= (ulong)_vocabSize)
                    throw new DataException(
                        $"{Path}: row group {rowGroup}, row {row}: token id {id} is outside the vocabulary [0, {_vocabSize}). "
                        + "The data was tokenized with another tokenizer than the model's vocab_size expects: compare dataset.json "
                        + "(tokenizer, vocab_size) with model.vocab_size, or re-run `disttrain prepare` with the matching --tokenizer.");
                into.Tokens[token++] = (int)id;
            }
            else if (_optionalIds && def == maxDef - 1)
                throw new DataException($"{Path}: row group {rowGroup}, row {row}: a token id is null; token lists must hold ids only, re-run `disttrain prepare`");
        }
        if (row + 1 != rows) throw Damaged(rowGroup, $"the footer says {rows} rows, the column holds {row + 1}");
        into.Offsets[rows] = token;
    }

    DataException Damaged(int rowGroup, string what) =>
        new($"{Path}: row group {rowGroup}: column '{_field.Path}' is inconsistent ({what}); the file is damaged, re-run `disttrain prepare`");

    static void Grow<T>(ref T[] buffer, int length)
    {
        if (buffer.Length < length) buffer = new T[Math.Max(length, buffer.Length * 2)];
    }

    public void Dispose() => SyncOverAsync.Wait(_reader.DisposeAsync);
}

/// <summary>A decoded row group: document r is Tokens[Offsets[r] .. Offsets[r+1]). Buffers are reused.</summary>
sealed class RowGroupTokens
{
    public int[] Tokens { get; private set; } = [];
    public int[] Offsets { get; private set; } = [0];
    public int Rows { get; private set; }

    public int Length(long row) => Offsets[row + 1] - Offsets[row];

    internal void Reset(int rows, int maxTokens)
    {
        Rows = rows;
        if (Offsets.Length < rows + 1) Offsets = new int[Math.Max(rows + 1, Offsets.Length * 2)];
        if (Tokens.Length < maxTokens) Tokens = new int[Math.Max(maxTokens, Tokens.Length * 2)];
    }
}
