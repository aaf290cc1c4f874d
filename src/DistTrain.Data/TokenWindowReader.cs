using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace DistTrain.Data;

/// <summary>
/// Packs tokenized documents into training windows. The stream (documents in file, row-group, row order, each
/// followed by one end-of-text) is cut into consecutive, non-overlapping windows of SeqLen+1 tokens; an epoch's
/// final partial window is dropped, and with Loop the next epoch starts again at file 0. These windows, numbered
/// from 0 in each epoch, are the epoch's global window sequence. With <see cref="WindowReaderOptions.Range"/> the
/// reader yields only windows [First, First+Count) of it, every epoch: it seeks to the first by the footers'
/// per-row-group token counts, decoding no earlier row group, and with Loop starts the next epoch there again.
/// A background thread decodes one row group at a time and keeps up to ReadAhead windows ready; <see cref="Cursor"/>
/// always describes the consumer's position, so a reader started from it yields exactly the windows this one
/// would have yielded next. Errors on the background thread surface from the next <see cref="TryNext(Span{long})"/> once the
/// windows read before them are taken.
/// </summary>
public sealed class TokenWindowReader : IDisposable
{
    readonly record struct Window(long[] Tokens, long Global, DataCursor After);

    readonly WindowReaderOptions _options;
    readonly BlockingCollection<Window> _ready;
    readonly ConcurrentBag<long[]> _free = [];   // window buffers handed back by the consumer
    readonly CancellationTokenSource _stop = new();
    readonly Thread _thread;
    readonly TokenStream _stream;   // owned by the background thread once it starts
    readonly DataCursor _start;
    readonly long _startGlobal;   // global index of the window at _start
    Exception? _error;   // set by the background thread before it completes _ready
    DataCursor _cursor;
    bool _disposed;

    /// <summary>
    /// Starts at start, a cursor from a reader with the same options, or afresh when start is null or
    /// <see cref="DataCursor.Start"/>: at window 0, or with a range at its first window (epoch 0).
    /// </summary>
    public TokenWindowReader(WindowReaderOptions options, DataCursor? start = null)
    {
        options.Validate();
        _options = options;
        EpochLayout layout = CheckFiles(options);
        TokensPerEpoch = layout.Total;
        _stream = new TokenStream(options, layout);
        try
        {
            (_start, _startGlobal) = Begin(start ?? DataCursor.Start);   // a cursor that does not fit fails here, not on the thread
        }
        catch
        {
            _stream.Dispose();
            throw;
        }
        _cursor = _start;
        _ready = new BlockingCollection<Window>(new ConcurrentQueue<Window>(), options.ReadAhead);
        _thread = new Thread(Produce) { IsBackground = true, Name = "DistTrain token windows" };
        _thread.Start();
    }

    /// <summary>The consumer's position: after the last window TryNext returned (the start cursor before any).</summary>
    public DataCursor Cursor => _cursor;

    /// <summary>
    /// Tokens in one pass over the files, end-of-text tokens included, from the Parquet footers. Exact for files
    /// from `disttrain prepare`; an upper bound for files whose null counts leave out empty documents.
    /// </summary>
    public long TokensPerEpoch { get; }

    /// <summary>Total time TryNext waited for the background thread; near zero when read-ahead keeps up.</summary>
    public TimeSpan WaitTime { get; private set; }

    /// <summary>Copies the next SeqLen+1 tokens into window; false only without Loop once the data (or the range) is exhausted.</summary>
    public bool TryNext(Span<long> window) => TryNext(window, out _);

    /// <summary>
    /// As <see cref="TryNext(Span{long})"/>, and names the window for a sample ledger: globalIndex is its index in
    /// the global window sequence of its epoch, which is <see cref="Cursor"/>.Epoch once this returns; -1 when false.
    /// Exact from the start of an epoch and with a range; a reader without a range resumed mid-epoch takes the
    /// index from the footer counts (see <see cref="DatasetWindows.Count"/>).
    /// </summary>
    public bool TryNext(Span<long> window, out long globalIndex)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (window.Length != _options.SeqLen + 1)
            throw new ArgumentException($"window holds {window.Length} tokens; SeqLen+1 = {_options.SeqLen + 1} expected", nameof(window));

        if (!_ready.TryTake(out Window next) && !Wait(out next))
        {
            if (_error is not null) ExceptionDispatchInfo.Throw(_error);
            globalIndex = -1;
            return false;
        }
        DataDiagnostics.Windows.Add(1);
        next.Tokens.CopyTo(window);
        _free.Add(next.Tokens);
        _cursor = next.After;
        globalIndex = next.Global;
        return true;
    }

    bool Wait(out Window next)
    {
        long started = Stopwatch.GetTimestamp();
        bool taken = _ready.TryTake(out next, Timeout.Infinite);
        TimeSpan waited = Stopwatch.GetElapsedTime(started);
        WaitTime += waited;
        DataDiagnostics.Wait.Add(waited.TotalSeconds);
        return taken;
    }

    // Footers only: every file must hold the column with the right type, and the set at least one window.
    static EpochLayout CheckFiles(WindowReaderOptions options)
    {
        EpochLayout layout = EpochLayout.Read(options.Files, options.Column);
        if (layout.Total < options.SeqLen + 1) throw TooSmall(options, layout.Total);
        return layout;
    }

    // Positions the stream at start; returns the consumer's first cursor and the global index of the window there.
    (DataCursor Cursor, long Global) Begin(DataCursor start)
    {
        int window = _options.SeqLen + 1;
        if (_options.Range is not { } range)
        {
            _stream.Seek(start, CancellationToken.None);
            return (start, _stream.Offset / window);
        }

        long epochWindows = TokensPerEpoch / window;
        if (range.End > epochWindows)
            throw new DataException(
                $"window range [{range.First}, {range.End}) reaches past the {epochWindows} windows of an epoch "
                + $"({TokensPerEpoch} tokens / SeqLen+1 = {window}); take the range from WindowRange.ForRank over "
                + "DatasetWindows.Count of the same files, column and seq_len.");
        if (start == DataCursor.Start)
        {
            _stream.SeekToOffset(range.First * window, CancellationToken.None);
            return (new DataCursor(0, _stream.File, _stream.RowGroup, _stream.Row, _stream.Token, 0), range.First);
        }

        _stream.Seek(start, CancellationToken.None);
        long offset = _stream.Offset, global = offset / window;
        // End itself is allowed: the cursor after a range's last window; the next window starts the next epoch
        if (offset % window != 0 || global < range.First || global > range.End)
            throw new DataException(
                $"data cursor {start.ToJson()} points at token {offset} of the epoch, "
                + (offset % window != 0
                    ? $"which is no window boundary for SeqLen+1 = {window}"
                    : $"global window {global}, outside this reader's range [{range.First}, {range.End})")
                + ": it was written with another train.seq_len, world size or rank. Resume every rank from its own cursor "
                + "with the same world size and train.seq_len, or start this data set afresh without the cursor.");
        return (start, global);
    }

    static DataException TooSmall(WindowReaderOptions options, long tokens) => new(
        $"the data set ({options.Files.Count} file(s), first {options.Files[0]}) holds {tokens} tokens with end-of-text markers; "
        + $"one window needs SeqLen+1 = {options.SeqLen + 1}. Add data or lower train.seq_len.");

    void Produce()
    {
        CancellationToken ct = _stop.Token;
        try
        {
            WindowRange? range = _options.Range;
            long end = range?.End ?? long.MaxValue;
            int epoch = _start.Epoch;
            long windows = _start.Windows, global = _startGlobal;
            bool fullPass = _start is { File: 0, RowGroup: 0, Row: 0, Token: 0 };   // only a full pass proves the set too small
            long passTokens = 0, passWindows = 0;
            while (true)
            {
                if (global == end)   // the range's share of this epoch is done
                {
                    if (!_options.Loop) return;
                    epoch++;
                    _stream.SeekToOffset(range!.First * (_options.SeqLen + 1), ct);
                    global = range.First;
                }
                if (!_free.TryTake(out long[]? buffer)) buffer = new long[_options.SeqLen + 1];
                int n = _stream.Read(buffer, ct);
                passTokens += n;
                if (n == buffer.Length)
                {
                    windows++;
                    passWindows++;
                    var after = new DataCursor(epoch, _stream.File, _stream.RowGroup, _stream.Row, _stream.Token, windows);
                    _ready.Add(new Window(buffer, global++, after), ct);
                    continue;
                }
                // the epoch's end: the partial window is dropped
                _free.Add(buffer);
                if (range is not null) throw EndedEarly(global);
                if (fullPass && passWindows == 0) throw TooSmall(_options, passTokens);
                if (!_options.Loop) return;
                epoch++;
                _stream.Seek(DataCursor.Start, ct);
                global = 0;
                (fullPass, passTokens, passWindows) = (true, 0, 0);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // Dispose asked us to stop
        }
        catch (Exception e)
        {
            _error = e;
        }
        finally
        {
            _stream.Dispose();
            _ready.CompleteAdding();
        }
    }

    // Every decoded row group matched its footer, so this means the files changed under the reader.
    DataException EndedEarly(long global) => new(
        $"the data ended before global window {global} of the range [{_options.Range!.First}, {_options.Range.End}), though the footers "
        + $"hold {TokensPerEpoch} tokens ({TokensPerEpoch / (_options.SeqLen + 1)} windows); were the files ({_options.Files[0]}, ...) rewritten during the run?");

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _stop.Cancel();
        // The thread checks the token between windows and inside row-group reads; a decode already running
        // finishes first. It is a background thread, so a stuck read cannot keep the process alive; what it
        // still uses is then left to the GC rather than disposed under it.
        if (!_thread.Join(TimeSpan.FromSeconds(10))) return;
        _stop.Dispose();
        _ready.Dispose();
    }
}
