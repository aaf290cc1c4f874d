namespace DistTrain.Data;

/// <summary>
/// The epoch's token stream: documents in file, row-group, row order, each followed by one end-of-text.
/// Holds one open file and one decoded row group. Its position is always normalized the same way (past a
/// document's end-of-text → next row → next row group → next file, using only the open file's metadata), so
/// a cursor taken from it and a stream seeked to that cursor continue identically.
/// With an <see cref="EpochLayout"/> it also maps positions to stream offsets and back; with options.Range set it
/// then checks every row group it decodes against the footer count those offsets rest on.
/// </summary>
sealed class TokenStream : IDisposable
{
    readonly WindowReaderOptions _options;
    readonly EpochLayout? _layout;
    readonly RowGroupTokens _group = new();
    TokenFile? _open;
    bool _loaded;   // _group holds (_file, _rowGroup)

    public TokenStream(WindowReaderOptions options, EpochLayout? layout = null) => (_options, _layout) = (options, layout);

    public int File { get; private set; }
    public int RowGroup { get; private set; }
    public long Row { get; private set; }
    public int Token { get; private set; }
    public bool AtEpochEnd => File == _options.Files.Count;

    /// <summary>Moves to a cursor's position; DataException when it does not fit the files.</summary>
    public void Seek(DataCursor cursor, CancellationToken ct)
    {
        int files = _options.Files.Count;
        string Misfit(string what) =>
            $"data cursor {cursor.ToJson()} does not fit the data set: {what}. Resume with the same data path "
            + "(and data.column) as the run that wrote the checkpoint, or start this data set afresh without the cursor.";

        if (cursor.File > files || (cursor.File == files && (cursor.RowGroup, cursor.Row, cursor.Token) != (0, 0L, 0)))
            throw new DataException(Misfit($"file index {cursor.File}, but there are {files} file(s)"));
        Close();
        (File, RowGroup, Row, Token) = (cursor.File, cursor.RowGroup, cursor.Row, cursor.Token);
        if (AtEpochEnd) return;

        TokenFile file = OpenFile(ct);
        if (RowGroup > file.RowGroupCount || (RowGroup == file.RowGroupCount && (Row, Token) != (0L, 0)))
            throw new DataException(Misfit($"row group {RowGroup}, but {file.Path} has {file.RowGroupCount}"));
        if (RowGroup < file.RowGroupCount)
        {
            long rows = file.RowCount(RowGroup);
            if (Row > rows || (Row == rows && Token != 0))
                throw new DataException(Misfit($"row {Row}, but row group {RowGroup} of {file.Path} has {rows} rows"));
            if (Row < rows)
            {
                Load(ct);
                int length = _group.Length(Row);
                if (Token > length)
                    throw new DataException(Misfit($"token {Token}, but row {Row} of row group {RowGroup} in {file.Path} has {length} tokens + end-of-text"));
            }
        }
        Normalize();
    }

    /// <summary>
    /// Moves to token offset of the epoch's stream (0 ≤ offset &lt; layout.Total), found from the footers' prefix sums:
    /// only the row group holding it is opened and decoded. Needs options.Range, under which every decode is checked
    /// against the footer these offsets come from.
    /// </summary>
    public void SeekToOffset(long offset, CancellationToken ct)
    {
        if (_options.Range is null) throw new InvalidOperationException("SeekToOffset relies on footer counts, which only a reader with a range checks");
        (int file, int rowGroup, long start) = Layout.Locate(offset);
        if (file != File) Close();
        (File, RowGroup, Row, Token) = (file, rowGroup, 0, 0);
        OpenFile(ct);
        Load(ct);   // checked against its footer, so offset − start lies inside the group
        long rest = offset - start;
        while (rest > _group.Length(Row))   // each row: its tokens, then its end-of-text
        {
            rest -= _group.Length(Row) + 1;
            Row++;
        }
        Token = (int)rest;
    }

    /// <summary>The current position as a token offset into the epoch's stream: footer prefix sums + the decoded row group.</summary>
    public long Offset
    {
        get
        {
            EpochLayout layout = Layout;
            if (AtEpochEnd) return layout.Total;
            long start = layout.Offset(File, RowGroup);
            if (_loaded) return start + _group.Offsets[Row] + Row + Token;
            // a normalized position in a row group not decoded yet is its start
            if ((Row, Token) != (0L, 0)) throw new InvalidOperationException($"position {File}/{RowGroup}/{Row}/{Token} is not normalized");
            return start;
        }
    }

    EpochLayout Layout => _layout ?? throw new InvalidOperationException("this stream was made without an EpochLayout");

    /// <summary>Fills dst from the current position; fewer than dst.Length only at the epoch's end.</summary>
    public int Read(Span<long> dst, CancellationToken ct)
    {
        int filled = 0;
        while (filled < dst.Length && Ready(ct))
        {
            int start = _group.Offsets[Row], length = _group.Length(Row);
            if (Token < length)
            {
                int n = Math.Min(length - Token, dst.Length - filled);
                ReadOnlySpan<int> src = _group.Tokens.AsSpan(start + Token, n);
                for (int i = 0; i < n; i++) dst[filled + i] = src[i];
                filled += n;
                Token += n;
            }
            else
            {
                dst[filled++] = _options.EndOfText;
                Token++;
            }
            Normalize();
        }
        return filled;
    }

    // Opens and decodes what the position needs, stepping over empty files and row groups; false at the epoch's end.
    bool Ready(CancellationToken ct)
    {
        while (!AtEpochEnd)
        {
            ct.ThrowIfCancellationRequested();
            TokenFile file = OpenFile(ct);
            if (RowGroup >= file.RowGroupCount) { NextFile(); continue; }
            if (!_loaded) Load(ct);
            if (Row >= _group.Rows) { NextRowGroup(); continue; }
            return true;
        }
        return false;
    }

    void Normalize()
    {
        if (_loaded && Row < _group.Rows && Token > _group.Length(Row)) { Row++; Token = 0; }
        if (_open is null) return;
        while (RowGroup < _open.RowGroupCount && Row >= (_loaded ? _group.Rows : _open.RowCount(RowGroup)))
            NextRowGroup();
        if (RowGroup >= _open.RowGroupCount) NextFile();
    }

    void NextRowGroup() { RowGroup++; Row = 0; Token = 0; _loaded = false; }

    void NextFile() { Close(); File++; RowGroup = 0; Row = 0; Token = 0; }

    TokenFile OpenFile(CancellationToken ct) =>
        _open ??= TokenFile.Open(_options.Files[File], _options.Column, _options.VocabSize, ct);

    void Load(CancellationToken ct)
    {
        _open!.Read(RowGroup, _group, ct);
        _loaded = true;
        DataDiagnostics.RowGroups.Add(1);
        if (_options.Range is not null) CheckFooter();
    }

    // Ranks place their windows by footer counts; one that is off would shift every later rank's windows.
    void CheckFooter()
    {
        long decoded = _group.Offsets[_group.Rows] + _group.Rows, footer = Layout.Tokens(File, RowGroup);
        if (decoded != footer)
            throw new DataException(
                $"{_open!.Path}: row group {RowGroup} holds {decoded} tokens with end-of-text markers, but its footer implies {footer} "
                + "(values − null count + rows), and ranks find their windows from the footers. Either the file changed after the "
                + "reader opened the data set (keep the data fixed during a run), or its writer's null count leaves out empty "
                + "documents (rewrite the files with `disttrain prepare`, or read them without a window range).");
    }

    void Close()
    {
        _open?.Dispose();
        _open = null;
        _loaded = false;
    }

    public void Dispose() => Close();
}
