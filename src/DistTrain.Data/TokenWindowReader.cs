using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace DistTrain.Data;

/// <summary>
/// Packs tokenized documents into training windows. The stream (documents in file, row-group, row order, each
/// followed by one end-of-text) is cut into consecutive, non-overlapping windows of SeqLen+1 tokens; an epoch's
/// final partial window is dropped, and with Loop the next epoch starts again at file 0.
/// A background thread decodes one row group at a time and keeps up to ReadAhead windows ready; <see cref="Cursor"/>
/// always describes the consumer's position, so a reader started from it yields exactly the windows this one
/// would have yielded next. Errors on the background thread surface from the next <see cref="TryNext"/> once the
/// windows read before them are taken.
/// </summary>
public sealed class TokenWindowReader : IDisposable
{
    readonly record struct Window(long[] Tokens, DataCursor After);

    readonly WindowReaderOptions _options;
    readonly BlockingCollection<Window> _ready;
    readonly ConcurrentBag<long[]> _free = [];   // window buffers handed back by the consumer
    readonly CancellationTokenSource _stop = new();
    readonly Thread _thread;
    readonly TokenStream _stream;   // owned by the background thread once it starts
    readonly DataCursor _start;
    Exception? _error;   // set by the background thread before it completes _ready
    DataCursor _cursor;
    bool _disposed;

    public TokenWindowReader(WindowReaderOptions options, DataCursor? start = null)
    {
        options.Validate();
        _options = options;
        _cursor = _start = start ?? DataCursor.Start;
        TokensPerEpoch = CheckFiles(options);
        _stream = new TokenStream(options);
        try
        {
            _stream.Seek(_start, CancellationToken.None);   // a cursor that does not fit fails here, not on the thread
        }
        catch
        {
            _stream.Dispose();
            throw;
        }
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

    /// <summary>Copies the next SeqLen+1 tokens into window; false only without Loop once the data is exhausted.</summary>
    public bool TryNext(Span<long> window)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (window.Length != _options.SeqLen + 1)
            throw new ArgumentException($"window holds {window.Length} tokens; SeqLen+1 = {_options.SeqLen + 1} expected", nameof(window));

        if (!_ready.TryTake(out Window next) && !Wait(out next))
        {
            if (_error is not null) ExceptionDispatchInfo.Throw(_error);
            return false;
        }
        DataDiagnostics.Windows.Add(1);
        next.Tokens.CopyTo(window);
        _free.Add(next.Tokens);
        _cursor = next.After;
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
    static long CheckFiles(WindowReaderOptions options)
    {
        long tokens = 0;
        foreach (string path in options.Files)
        {
            using TokenFile file = TokenFile.Open(path, options.Column, options.VocabSize);
            tokens += file.TokensFromMetadata();
        }
        if (tokens < options.SeqLen + 1) throw TooSmall(options, tokens);
        return tokens;
    }

    static DataException TooSmall(WindowReaderOptions options, long tokens) => new(
        $"the data set ({options.Files.Count} file(s), first {options.Files[0]}) holds {tokens} tokens with end-of-text markers; "
        + $"one window needs SeqLen+1 = {options.SeqLen + 1}. Add data or lower train.seq_len.");

    void Produce()
    {
        CancellationToken ct = _stop.Token;
        try
        {
            int epoch = _start.Epoch;
            long windows = _start.Windows;
            bool fullPass = _start is { File: 0, RowGroup: 0, Row: 0, Token: 0 };   // only a full pass proves the set too small
            long passTokens = 0, passWindows = 0;
            while (true)
            {
                if (!_free.TryTake(out long[]? buffer)) buffer = new long[_options.SeqLen + 1];
                int n = _stream.Read(buffer, ct);
                passTokens += n;
                if (n == buffer.Length)
                {
                    windows++;
                    passWindows++;
                    var after = new DataCursor(epoch, _stream.File, _stream.RowGroup, _stream.Row, _stream.Token, windows);
                    _ready.Add(new Window(buffer, after), ct);
                    continue;
                }
                // the epoch's end: the partial window is dropped
                _free.Add(buffer);
                if (fullPass && passWindows == 0) throw TooSmall(_options, passTokens);
                if (!_options.Loop) return;
                epoch++;
                _stream.Seek(DataCursor.Start, ct);
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
