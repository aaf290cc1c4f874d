// Hand-written because .NET has no MPI or Gloo binding that works with TorchSharp: a small ring all-reduce
// over TCP (reduce-scatter then all-gather, as in Gloo's and Horovod's rings) for CPU jobs and for tests.
// GPU jobs use NCCL.
using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Distributed;

/// <summary>
/// W processes in a ring: rank i sends to rank (i+1)%W and receives from rank (i-1+W)%W. All-reduce
/// splits the buffer into W chunks; W-1 reduce-scatter steps leave each rank owning one fully reduced
/// chunk, which it divides by W, and W-1 all-gather steps hand the chunks round, so each rank sends
/// 2(W-1)/W of the buffer. Each chunk is summed once, in ring order, and copied from there, so every
/// rank ends bitwise identical. Sends run on a dedicated thread while the calling thread receives and
/// reduces, segment by segment, so large buffers never deadlock and the ring stays pipelined.
/// </summary>
public sealed unsafe class RingCommunicator : ICommunicator
{
    /// <summary>The unit of pipelining: a segment received and reduced can be forwarded while the next arrives.</summary>
    internal const int SegmentBytes = 512 * 1024;
    /// <summary>Larger tensors are reduced as consecutive views of this size (spans and offsets stay in int).</summary>
    internal const long MaxCollectiveBytes = 1L << 30;
    const uint FrameMagic = 0x43525444;   // "DTRC"
    const int HeaderBytes = 32;

    readonly IReadOnlyList<IPEndPoint> _peers;
    readonly TimeSpan _timeout;
    readonly Socket? _right, _left;
    readonly Thread? _sender;
    readonly byte[] _scratch = GC.AllocateArray<byte>(SegmentBytes, pinned: true);
    readonly byte[] _token = GC.AllocateArray<byte>(1, pinned: true);
    readonly byte[] _sendHeader = GC.AllocateArray<byte>(HeaderBytes, pinned: true);
    readonly byte[] _receiveHeader = new byte[HeaderBytes];

    // shared between the calling thread and the sender thread, under _gate
    readonly object _gate = new();
    Plan? _pending;            // handed to the sender
    bool _sending;             // the sender is inside a plan (and may be reading tensor memory)
    int _received;             // receive pieces of the current plan completed
    bool _stopping;
    bool _disposed;
    CommunicatorException? _fault;

    int _inCollective;         // 1 while a thread is inside a collective
    long _sequence;            // collectives so far; every rank counts the same

    RingCommunicator(int rank, int worldSize, IReadOnlyList<IPEndPoint> peers, TimeSpan timeout, Socket? right, Socket? left)
    {
        Rank = rank;
        WorldSize = worldSize;
        _peers = peers;
        _timeout = timeout;
        _right = right;
        _left = left;
        if (right is null || left is null) return;
        int ms = timeout == Timeout.InfiniteTimeSpan || timeout.TotalMilliseconds >= int.MaxValue ? 0 : (int)Math.Ceiling(timeout.TotalMilliseconds);
        right.SendTimeout = ms;
        left.ReceiveTimeout = ms;
        _sender = new Thread(SendLoop) { IsBackground = true, Name = $"ring-send-{rank}" };
        _sender.Start();
    }

    public int Rank { get; }
    public int WorldSize { get; }
    int RightRank => (Rank + 1) % WorldSize;
    int LeftRank => (Rank - 1 + WorldSize) % WorldSize;

    /// <summary>
    /// Joins the ring as <paramref name="rank"/>: listens on peers[rank], connects to peers[(rank+1)%W]
    /// (retrying while that rank starts) and accepts rank (rank-1+W)%W. Returns once both connections
    /// passed the handshake; a peer of another job, world size or rank is refused on both ends, and a process that
    /// cannot prove it holds <paramref name="jobToken"/> is refused (it cannot join the ring or feed it gradients).
    /// </summary>
    /// <param name="peers">peers[i] is where rank i listens; the same list on every rank</param>
    /// <param name="jobId">names the job; ranks with different ids refuse each other</param>
    /// <param name="jobToken">the job's secret (the coordinator's token); the handshake proves it with HMAC-SHA256 over fresh nonces and never sends it</param>
    /// <param name="timeout">how long to wait for the neighbours to connect, and afterwards how long any one send or
    /// receive of a collective may wait for its peer (so pick it above the largest skew between ranks, e.g. a checkpoint
    /// save on one of them); <see cref="Timeout.InfiniteTimeSpan"/> for none</param>
    public static RingCommunicator Connect(int rank, int worldSize, IReadOnlyList<IPEndPoint> peers, string jobId, string jobToken,
        TimeSpan timeout, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(peers);
        ArgumentNullException.ThrowIfNull(jobId);
        ArgumentException.ThrowIfNullOrEmpty(jobToken);
        if (worldSize < 1) throw new ArgumentOutOfRangeException(nameof(worldSize), worldSize, "world size must be at least 1");
        if (rank < 0 || rank >= worldSize) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in [0, {worldSize})");
        if (peers.Count != worldSize)
            throw new ArgumentException($"{peers.Count} peer endpoints for world size {worldSize}: list one per rank, rank 0 first", nameof(peers));
        if (System.Text.Encoding.UTF8.GetByteCount(jobId) > 1024)
            throw new ArgumentException("the job id is longer than 1024 UTF-8 bytes; a run name or a GUID is enough", nameof(jobId));
        if (timeout <= TimeSpan.Zero && timeout != Timeout.InfiniteTimeSpan)
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "timeout must be positive (or Timeout.InfiniteTimeSpan)");
        if (worldSize == 1) return new RingCommunicator(0, 1, peers, timeout, null, null);
        var (right, left) = RingHandshake.Establish(rank, worldSize, peers, jobId, jobToken, timeout, ct);
        return new RingCommunicator(rank, worldSize, peers, timeout, right, left);
    }

    public void AllReduceMean(Tensor flat)
    {
        CheckTensor(flat, nameof(flat));
        if (flat.dtype is not (ScalarType.Float32 or ScalarType.Float64 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new ArgumentException($"AllReduceMean takes float32, float64, bfloat16 or float16 tensors, not {flat.dtype}", nameof(flat));
        if (WorldSize == 1) return;
        if (flat.dtype is ScalarType.BFloat16 or ScalarType.Float16)
        {
            // reduce in fp32 and round once at the end: every rank rounds the same fp32 values, so stays identical
            using var wide = flat.to_type(ScalarType.Float32);
            Collective(Op.AllReduceMean, wide, 0);
            flat.copy_(wide);
            return;
        }
        Collective(Op.AllReduceMean, flat, 0);
    }

    public void Broadcast(Tensor flat, int root)
    {
        CheckTensor(flat, nameof(flat));
        if (root < 0 || root >= WorldSize) throw new ArgumentOutOfRangeException(nameof(root), root, $"root must be in [0, {WorldSize})");
        if (WorldSize == 1) return;
        Collective(Op.Broadcast, flat, root);
    }

    public void Shift(Tensor send, Tensor receive)
    {
        CheckTensor(send, nameof(send));
        CheckTensor(receive, nameof(receive));
        if (receive.dtype != send.dtype) throw new ArgumentException($"Shift receives {receive.dtype} into a tensor of {send.dtype}: both must have one dtype", nameof(receive));
        if (WorldSize == 1)
        {
            receive.copy_(send);
            return;
        }
        Enter();
        try
        {
            var clock = Stopwatch.StartNew();
            var from = send.bytes;
            var into = receive.bytes;
            if ((long)from.Length > MaxCollectiveBytes || (long)into.Length > MaxCollectiveBytes)
                throw new ArgumentException($"Shift moves at most {MaxCollectiveBytes} bytes at a time; pass consecutive views", nameof(send));
            nint source = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(from)), target = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(into));
            Run(ShiftPlan(source, from.Length, target, into.Length));
            DistributedDiagnostics.Bytes.Add(from.Length, new KeyValuePair<string, object?>("op", OpName(Op.Shift)));
            DistributedDiagnostics.Duration.Record(clock.Elapsed.TotalSeconds, new KeyValuePair<string, object?>("op", OpName(Op.Shift)));
        }
        finally
        {
            Volatile.Write(ref _inCollective, 0);
        }
    }

    public void Barrier()
    {
        if (WorldSize == 1) return;
        Enter();
        try
        {
            Run(BarrierPlan());
        }
        finally
        {
            Volatile.Write(ref _inCollective, 0);
        }
    }

    public void Abort() => Fail(new CommunicatorException(Rank, null, null, $"rank {Rank}: the communicator was aborted"));

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            _fault ??= new CommunicatorException(Rank, null, null, $"rank {Rank}: the communicator was disposed");
            _stopping = true;
            Monitor.PulseAll(_gate);
        }
        CloseSockets();
        _sender?.Join();
    }

    void CheckTensor(Tensor flat, string name)
    {
        ArgumentNullException.ThrowIfNull(flat, name);
        if (flat.device_type != DeviceType.CPU)
            throw new ArgumentException($"the ring reduces CPU tensors; this one is on {flat.device}: use the nccl communicator for GPU jobs", name);
        if (!flat.is_contiguous())
            throw new ArgumentException("the ring needs a contiguous tensor: pass .contiguous() and copy the result back", name);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed), this);
    }

    void Enter()
    {
        if (Interlocked.Exchange(ref _inCollective, 1) != 0)
            throw new InvalidOperationException($"rank {Rank}: two collectives at once on one communicator; call them from one thread, in the same order on every rank");
    }

    /// <summary>One collective over the tensor, as consecutive views of at most <see cref="MaxCollectiveBytes"/>.</summary>
    void Collective(Op op, Tensor flat, int root)
    {
        Enter();
        try
        {
            long elementSize = flat.ElementSize, count = flat.NumberOfElements;
            long perPart = Math.Max(1, MaxCollectiveBytes / elementSize);
            if (count <= perPart)
            {
                RunOn(op, flat, root);
                return;
            }
            using var line = flat.view(-1);
            for (long start = 0; start < count; start += perPart)
            {
                using var part = line.narrow(0, start, Math.Min(perPart, count - start));
                RunOn(op, part, root);
            }
        }
        finally
        {
            Volatile.Write(ref _inCollective, 0);
        }
    }

    void RunOn(Op op, Tensor t, int root)
    {
        var clock = Stopwatch.StartNew();
        var bytes = t.bytes;   // the tensor's own storage from its offset on: contiguous CPU, checked above
        nint data = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(bytes));
        var type = t.dtype switch { ScalarType.Float32 => ReduceType.Float32, ScalarType.Float64 => ReduceType.Float64, _ => ReduceType.None };
        var plan = op == Op.AllReduceMean
            ? AllReducePlan(data, bytes.Length, (int)t.ElementSize, type)
            : BroadcastPlan(data, bytes.Length, root);
        Run(plan);
        DistributedDiagnostics.Bytes.Add(bytes.Length, new KeyValuePair<string, object?>("op", OpName(op)));
        DistributedDiagnostics.Duration.Record(clock.Elapsed.TotalSeconds, new KeyValuePair<string, object?>("op", OpName(op)));
    }

    // ---- plans: what to send and receive, in order ----

    enum Op { AllReduceMean = 1, Broadcast = 2, Barrier = 3, Shift = 4 }
    enum Action { Store, Add, AddThenDivide }

    /// <summary>Send <see cref="Bytes"/> from <see cref="Source"/> once the first <see cref="After"/> receive pieces are done.</summary>
    readonly record struct SendPiece(nint Source, int Bytes, int After);
    readonly record struct ReceivePiece(nint Target, int Bytes, Action Action);

    /// <param name="Bytes">what this rank sends (Expected: what it receives; the same but for a shift of unequal slices)</param>
    sealed record Plan(Op Op, long Sequence, long Bytes, int Root, ReduceType Type, List<SendPiece> Sends, List<ReceivePiece> Receives)
    {
        public long Expected { get; init; } = Bytes;
    }

    Plan AllReducePlan(nint data, int bytes, int elementSize, ReduceType type)
    {
        int w = WorldSize, r = Rank, count = bytes / elementSize;
        var sends = new List<SendPiece>();
        var receives = new List<ReceivePiece>();
        int previousFirst = 0;
        // steps 0..W-2 reduce-scatter, W-1..2W-3 all-gather; what a step sends is what the step before received
        for (int step = 0; step < 2 * (w - 1); step++)
        {
            bool scatter = step < w - 1;
            int s = scatter ? step : step - (w - 1);
            int sendChunk = Mod(scatter ? r - s : r + 1 - s, w), receiveChunk = Mod(scatter ? r - s - 1 : r - s, w);
            var action = !scatter ? Action.Store : s == w - 2 ? Action.AddThenDivide : Action.Add;
            int k = 0;
            foreach (var (at, length) in Segments(Chunk(sendChunk, count, w), elementSize))
                sends.Add(new SendPiece(data + (nint)at, length, step == 0 ? 0 : previousFirst + ++k));
            previousFirst = receives.Count;
            foreach (var (at, length) in Segments(Chunk(receiveChunk, count, w), elementSize))
                receives.Add(new ReceivePiece(data + (nint)at, length, action));
        }
        return new Plan(Op.AllReduceMean, _sequence++, bytes, 0, type, sends, receives);
    }

    Plan BroadcastPlan(nint data, int bytes, int root)
    {
        // pipelined: root sends, everyone else forwards each segment as soon as it arrived, the last one only receives
        int position = Mod(Rank - root, WorldSize);
        var sends = new List<SendPiece>();
        var receives = new List<ReceivePiece>();
        int k = 0;
        foreach (var (at, length) in Segments((0, bytes), 1))
        {
            if (position != 0) receives.Add(new ReceivePiece(data + (nint)at, length, Action.Store));
            if (position != WorldSize - 1) sends.Add(new SendPiece(data + (nint)at, length, position == 0 ? 0 : ++k));
        }
        return new Plan(Op.Broadcast, _sequence++, bytes, root, ReduceType.None, sends, receives);
    }

    Plan ShiftPlan(nint source, int bytes, nint target, int expected)
    {
        // one hop: everything to the right, everything from the left; the sender never waits for a receive
        var sends = Segments((0, bytes), 1).Select(s => new SendPiece(source + (nint)s.At, s.Bytes, 0)).ToList();
        var receives = Segments((0, expected), 1).Select(s => new ReceivePiece(target + (nint)s.At, s.Bytes, Action.Store)).ToList();
        return new Plan(Op.Shift, _sequence++, bytes, 0, ReduceType.None, sends, receives) { Expected = expected };
    }

    Plan BarrierPlan()
    {
        // W-1 rounds of a token, each sent only after the previous round's arrived: after the last, every rank has
        // heard (transitively) from all the others, so all have entered
        nint token = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_token));
        var sends = new List<SendPiece>();
        var receives = new List<ReceivePiece>();
        for (int round = 0; round < WorldSize - 1; round++)
        {
            sends.Add(new SendPiece(token, 1, round));
            receives.Add(new ReceivePiece(token, 1, Action.Store));
        }
        return new Plan(Op.Barrier, _sequence++, 0, 0, ReduceType.None, sends, receives);
    }

    /// <summary>(first element, element count) of chunk c of W: the first count%W chunks get one more.</summary>
    static (long Start, long Count) Chunk(int c, long count, int w)
    {
        long size = count / w, extra = count % w;
        return (c * size + Math.Min(c, extra), size + (c < extra ? 1 : 0));
    }

    /// <summary>(byte offset, byte length) pieces of at most <see cref="SegmentBytes"/> covering the elements.</summary>
    static IEnumerable<(long At, int Bytes)> Segments((long Start, long Count) elements, int elementSize)
    {
        long perSegment = SegmentBytes / elementSize;
        for (long i = 0; i < elements.Count; i += perSegment)
            yield return ((elements.Start + i) * elementSize, (int)(Math.Min(perSegment, elements.Count - i) * elementSize));
    }

    static int Mod(int a, int m) => ((a % m) + m) % m;

    static string OpName(Op op) => op switch { Op.AllReduceMean => "all_reduce_mean", Op.Broadcast => "broadcast", Op.Shift => "shift", _ => "barrier" };

    // ---- running a plan: the caller receives and reduces, the sender thread sends ----

    void Run(Plan plan)
    {
        lock (_gate)
        {
            ThrowIfUnusable();
            _received = 0;
            _sending = true;
            _pending = plan;
            Monitor.PulseAll(_gate);
        }
        try
        {
            Receive(plan);
        }
        catch (CommunicatorException e)
        {
            Fail(e);
        }
        catch (Exception e) when (IsConnectionFailure(e))
        {
            Fail(ConnectionError(e, LeftRank, "receiving from", plan));
        }
        lock (_gate)
        {
            // the sender may still be reading the tensor: the caller must not free it before this returns
            while (_sending) Monitor.Wait(_gate);
            if (_fault is not null) throw _fault;
        }
    }

    void Receive(Plan plan)
    {
        var left = _left!;
        ReceiveExactly(left, _receiveHeader);
        CheckHeader(plan);
        nint scratch = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_scratch));
        for (int i = 0; i < plan.Receives.Count; i++)
        {
            var piece = plan.Receives[i];
            if (piece.Action == Action.Store)
            {
                ReceiveExactly(left, new Span<byte>((void*)piece.Target, piece.Bytes));
            }
            else
            {
                ReceiveExactly(left, _scratch.AsSpan(0, piece.Bytes));
                Reduction.Add(plan.Type, piece.Target, scratch, piece.Bytes);
                if (piece.Action == Action.AddThenDivide) Reduction.Divide(plan.Type, piece.Target, piece.Bytes, WorldSize);
            }
            lock (_gate)
            {
                _received = i + 1;
                Monitor.PulseAll(_gate);
            }
        }
    }

    void SendLoop()
    {
        while (true)
        {
            Plan plan;
            lock (_gate)
            {
                while (_pending is null && !_stopping) Monitor.Wait(_gate);
                if (_pending is null) return;
                plan = _pending;
                _pending = null;
            }
            try
            {
                WriteHeader(plan);
                SendExactly(_right!, _sendHeader);
                foreach (var piece in plan.Sends)
                {
                    lock (_gate)
                    {
                        while (_received < piece.After && _fault is null) Monitor.Wait(_gate);
                        if (_fault is not null) break;
                    }
                    SendExactly(_right!, new ReadOnlySpan<byte>((void*)piece.Source, piece.Bytes));
                }
            }
            catch (Exception e) when (IsConnectionFailure(e))
            {
                Fail(ConnectionError(e, RightRank, "sending to", plan));
            }
            catch (Exception e)
            {
                Fail(new CommunicatorException(Rank, RightRank, _peers[RightRank], $"rank {Rank}: sending failed: {e.Message}", e));
            }
            finally
            {
                lock (_gate)
                {
                    _sending = false;
                    Monitor.PulseAll(_gate);
                }
            }
        }
    }

    // header: magic u32, op i32, sequence i64, bytes i64, root i32, type i32; checks that neighbours run the same collective
    void WriteHeader(Plan p)
    {
        var h = _sendHeader.AsSpan();
        BinaryPrimitives.WriteUInt32LittleEndian(h, FrameMagic);
        BinaryPrimitives.WriteInt32LittleEndian(h[4..], (int)p.Op);
        BinaryPrimitives.WriteInt64LittleEndian(h[8..], p.Sequence);
        BinaryPrimitives.WriteInt64LittleEndian(h[16..], p.Bytes);
        BinaryPrimitives.WriteInt32LittleEndian(h[24..], p.Root);
        BinaryPrimitives.WriteInt32LittleEndian(h[28..], (int)p.Type);
    }

    void CheckHeader(Plan mine)
    {
        var h = _receiveHeader.AsSpan();
        if (BinaryPrimitives.ReadUInt32LittleEndian(h) != FrameMagic)
            throw new CommunicatorException(Rank, LeftRank, _peers[LeftRank], $"rank {Rank}: rank {LeftRank} sent garbage instead of a collective header");
        var op = (Op)BinaryPrimitives.ReadInt32LittleEndian(h[4..]);
        long sequence = BinaryPrimitives.ReadInt64LittleEndian(h[8..]), bytes = BinaryPrimitives.ReadInt64LittleEndian(h[16..]);
        int root = BinaryPrimitives.ReadInt32LittleEndian(h[24..]);
        var type = (ReduceType)BinaryPrimitives.ReadInt32LittleEndian(h[28..]);
        if (op != mine.Op || sequence != mine.Sequence || bytes != mine.Expected || root != mine.Root || type != mine.Type)
            throw new CommunicatorException(Rank, LeftRank, _peers[LeftRank],
                $"rank {Rank} is in {Describe(mine.Op, mine.Sequence, mine.Expected, mine.Root, mine.Type)} but rank {LeftRank} is in " +
                $"{Describe(op, sequence, bytes, root, type)}: every rank must call the same collectives, in the same order, on tensors of the same size and dtype");
    }

    static string Describe(Op op, long sequence, long bytes, int root, ReduceType type) => op switch
    {
        Op.AllReduceMean => $"collective #{sequence}, all-reduce of {bytes} bytes of {type.ToString().ToLowerInvariant()}",
        Op.Broadcast => $"collective #{sequence}, broadcast of {bytes} bytes from rank {root}",
        Op.Barrier => $"collective #{sequence}, a barrier",
        Op.Shift => $"collective #{sequence}, a shift of {bytes} bytes to the right neighbour",
        _ => $"collective #{sequence}, unknown op {(int)op}",
    };

    static void SendExactly(Socket s, ReadOnlySpan<byte> data)
    {
        while (data.Length > 0) data = data[s.Send(data)..];
    }

    static void ReceiveExactly(Socket s, Span<byte> into)
    {
        while (into.Length > 0)
        {
            int n = s.Receive(into);
            if (n == 0) throw new EndOfStreamException();
            into = into[n..];
        }
    }

    // ---- failure: the first one is kept, both sockets close, so the neighbours fail too and it goes round the ring ----

    static bool IsConnectionFailure(Exception e) => e is SocketException or ObjectDisposedException or EndOfStreamException or IOException;

    CommunicatorException ConnectionError(Exception e, int peer, string direction, Plan plan)
    {
        var at = _peers[peer];
        string what = Describe(plan.Op, plan.Sequence, plan.Bytes, plan.Root, plan.Type);
        string why = e switch
        {
            EndOfStreamException or SocketException { SocketErrorCode: SocketError.ConnectionReset or SocketError.ConnectionAborted or SocketError.Shutdown } =>
                $"rank {peer} closed the connection (it failed, was aborted or exited)",
            SocketException { SocketErrorCode: SocketError.TimedOut or SocketError.WouldBlock } =>
                $"no progress for {_timeout} (timeout): is rank {peer} stuck, or further behind than the timeout allows?",
            SocketException s => $"{s.SocketErrorCode}: {s.Message}",
            _ => e.Message,
        };
        return new CommunicatorException(Rank, peer, at, $"rank {Rank}: {direction} rank {peer} ({at}) failed during {what}: {why}", e);
    }

    void Fail(CommunicatorException e)
    {
        lock (_gate)
        {
            _fault ??= e;
            _stopping = true;
            Monitor.PulseAll(_gate);
        }
        CloseSockets();
    }

    void CloseSockets()
    {
        foreach (var s in new[] { _right, _left })
        {
            if (s is null) continue;
            try
            {
                s.Shutdown(SocketShutdown.Both);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // already closed or reset: closing is all that is left to do
            }
            s.Dispose();
        }
    }

    void ThrowIfUnusable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_fault is { } f)
            throw new CommunicatorException(Rank, f.PeerRank, f.Endpoint, $"rank {Rank}: the communicator is unusable after an earlier failure: {f.Message}", f);
    }
}
