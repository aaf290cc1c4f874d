using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Runtime.ExceptionServices;
using System.Text;

namespace DistTrain.Distributed;

/// <summary>
/// Sets up a rank's two ring connections: it connects to its right neighbour (retrying while that rank
/// starts) and accepts its left neighbour, both at once, since every rank does both. The connecting side
/// introduces itself (magic, protocol version, rank, world size, job id); the accepting side answers
/// accept or refuse-with-reason, so a misconfigured pair fails on both ends with the same explanation.
/// </summary>
internal static class RingHandshake
{
    const uint HelloMagic = 0x48525444;   // "DTRH" little-endian
    const uint ReplyMagic = 0x52525444;   // "DTRR"
    const ushort ProtocolVersion = 1;
    const int MaxText = 4096;
    /// <summary>How long an accepted connection may take to introduce itself before it is dropped as a stranger.</summary>
    static readonly TimeSpan HelloLimit = TimeSpan.FromSeconds(5);
    static readonly TimeSpan FirstRetry = TimeSpan.FromMilliseconds(20), LastRetry = TimeSpan.FromMilliseconds(500);

    sealed record Hello(ushort Version, int Rank, int WorldSize, string JobId);

    public static (Socket Right, Socket Left) Establish(int rank, int worldSize, IReadOnlyList<IPEndPoint> peers, string jobId,
        TimeSpan timeout, CancellationToken ct)
    {
        int right = (rank + 1) % worldSize, left = (rank - 1 + worldSize) % worldSize;
        var me = new Hello(ProtocolVersion, rank, worldSize, jobId);
        using var listener = Listen(rank, peers[rank]);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
        deadline.CancelAfter(timeout);
        var connect = ConnectAsync(me, right, peers[right], timeout, deadline, ct);
        var accept = AcceptAsync(me, left, peers[left], listener, timeout, deadline.Token, ct);
        return BothAsync(connect, accept, deadline, sameNeighbour: left == right).GetAwaiter().GetResult();
    }

    /// <summary>
    /// Both connections, or the first failure (the other side is then cancelled and its socket closed). When both
    /// ran out of time, the connecting side's error leads: it carries the last connect error (e.g. refused).
    /// </summary>
    static async Task<(Socket, Socket)> BothAsync(Task<Socket> connect, Task<Socket> accept, CancellationTokenSource deadline, bool sameNeighbour)
    {
        var first = await Task.WhenAny(connect, accept).ConfigureAwait(false);
        bool cancelledHere = false;
        if (!first.IsCompletedSuccessfully && !deadline.IsCancellationRequested)
        {
            deadline.Cancel();
            cancelledHere = true;
        }
        try
        {
            await Task.WhenAll(connect, accept).ConfigureAwait(false);
            return (connect.Result, accept.Result);
        }
        catch
        {
            if (connect.IsCompletedSuccessfully) connect.Result.Dispose();
            if (accept.IsCompletedSuccessfully) accept.Result.Dispose();
            if (!cancelledHere && connect.Exception?.InnerException is CommunicatorException c && accept.Exception?.InnerException is CommunicatorException a)
            {
                if (sameNeighbour) ExceptionDispatchInfo.Throw(c);
                throw new CommunicatorException(c.Rank ?? -1, c.PeerRank, c.Endpoint, $"{c.Message} Also, {a.Message}", c);
            }
            var failed = first.IsCompletedSuccessfully ? (first == connect ? accept : connect) : first;
            ExceptionDispatchInfo.Throw(failed.Exception!.InnerException!);
            throw;
        }
    }

    static Socket Listen(int rank, IPEndPoint at)
    {
        var listener = new Socket(at.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            // a port left in TIME_WAIT by a previous run on this host may be reused at once
            listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            listener.Bind(at);
            listener.Listen(16);
            return listener;
        }
        catch (SocketException e)
        {
            listener.Dispose();
            throw new CommunicatorException(rank, rank, at,
                $"rank {rank} cannot listen on {at}: {e.Message}. Is another process using that port? Give this rank a free one.", e);
        }
    }

    static async Task<Socket> ConnectAsync(Hello me, int peer, IPEndPoint at, TimeSpan timeout, CancellationTokenSource deadline, CancellationToken ct)
    {
        Exception? last = null;
        var delay = FirstRetry;
        while (true)
        {
            var socket = new Socket(at.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(at, deadline.Token).ConfigureAwait(false);
                await SendAsync(socket, EncodeHello(me), deadline.Token).ConfigureAwait(false);
                var (accepted, peerRank, reason) = await ReadReplyAsync(socket, deadline.Token).ConfigureAwait(false);
                if (!accepted)
                    throw new CommunicatorException(me.Rank, peer, at, $"rank {me.Rank}: rank {peer} at {at} refused the connection: {reason}");
                if (peerRank != peer)
                    throw new CommunicatorException(me.Rank, peer, at,
                        $"rank {me.Rank}: the process at {at} is rank {peerRank}, not rank {peer}: the ranks' peer lists differ");
                return socket;
            }
            catch (Exception e) when (e is SocketException or EndOfStreamException or InvalidDataException)
            {
                // not listening yet (refused), or closed mid-handshake: retry until the deadline
                socket.Dispose();
                last = e;
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                socket.Dispose();
                throw ConnectTimeout(me.Rank, peer, at, timeout, last);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
            try
            {
                await Task.Delay(delay, deadline.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw ConnectTimeout(me.Rank, peer, at, timeout, last);
            }
            delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, LastRetry.Ticks));
        }
    }

    static CommunicatorException ConnectTimeout(int rank, int peer, IPEndPoint at, TimeSpan timeout, Exception? last)
        => new(rank, peer, at,
            $"rank {rank}: could not connect to rank {peer} at {at} within {timeout}" +
            (last is null ? "" : $" (last attempt: {last.Message})") +
            $". Is rank {peer} running, and listening on that address?", last);

    static async Task<Socket> AcceptAsync(Hello me, int left, IPEndPoint leftAt, Socket listener, TimeSpan timeout,
        CancellationToken deadline, CancellationToken ct)
    {
        string? stranger = null;
        while (true)
        {
            Socket socket;
            try
            {
                socket = await listener.AcceptAsync(deadline).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw new CommunicatorException(me.Rank, left, leftAt,
                    $"rank {me.Rank}: rank {left} (which listens on {leftAt}) did not connect to {listener.LocalEndPoint} within {timeout}" +
                    (stranger is null ? "" : $"; dropped a connection that did not speak the ring protocol ({stranger})") +
                    $". Is rank {left} running, with the same peer list?");
            }
            socket.NoDelay = true;
            var from = socket.RemoteEndPoint;
            Hello hello;
            try
            {
                using var limit = CancellationTokenSource.CreateLinkedTokenSource(deadline);
                limit.CancelAfter(HelloLimit);
                hello = await ReadHelloAsync(socket, limit.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is SocketException or EndOfStreamException or InvalidDataException
                                      || (e is OperationCanceledException && !deadline.IsCancellationRequested))
            {
                socket.Dispose();
                stranger = $"from {from}: {e.Message}";
                continue;
            }
            catch
            {
                socket.Dispose();
                throw;
            }

            var reason = Refusal(me, left, hello);
            try
            {
                await SendAsync(socket, EncodeReply(reason is null, me.Rank, reason), deadline).ConfigureAwait(false);
            }
            catch (Exception e) when (e is SocketException && reason is null)
            {
                socket.Dispose();
                stranger = $"from {from}: {e.Message}";
                continue;
            }
            catch (Exception) when (reason is not null)
            {
                // refusing anyway; the connector learns of it from the closed connection
            }
            if (reason is null) return socket;
            socket.Dispose();
            throw new CommunicatorException(me.Rank, hello.Rank, from,
                $"rank {me.Rank}: refused a connection from {from} claiming rank {hello.Rank} of world size {hello.WorldSize}, job '{hello.JobId}': {reason}");
        }
    }

    static string? Refusal(Hello me, int left, Hello them)
    {
        if (them.Version != me.Version)
            return $"ring protocol version {them.Version}, this rank speaks {me.Version}: run the same DistTrain build on every rank";
        if (them.JobId != me.JobId)
            return $"job id '{them.JobId}' is not this rank's '{me.JobId}': another job is using these endpoints; give each job its own ports";
        if (them.WorldSize != me.WorldSize)
            return $"world size {them.WorldSize} is not this rank's {me.WorldSize}: start every rank with the same world size";
        if (them.Rank != left)
            return $"rank {them.Rank} is not this rank's left neighbour (rank {left}): the ranks' peer lists differ";
        return null;
    }

    // hello: magic u32, version u16, rank i32, world size i32, job id (u16 length + UTF-8)
    static byte[] EncodeHello(Hello h)
    {
        var job = Encoding.UTF8.GetBytes(h.JobId);
        var b = new byte[16 + job.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(b, HelloMagic);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(4), h.Version);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(6), h.Rank);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(10), h.WorldSize);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(14), checked((ushort)job.Length));
        job.CopyTo(b, 16);
        return b;
    }

    static async Task<Hello> ReadHelloAsync(Socket s, CancellationToken ct)
    {
        var head = new byte[16];
        await ReadExactlyAsync(s, head, ct).ConfigureAwait(false);
        if (BinaryPrimitives.ReadUInt32LittleEndian(head) != HelloMagic)
            throw new InvalidDataException("not a DistTrain ring handshake");
        int length = BinaryPrimitives.ReadUInt16LittleEndian(head.AsSpan(14));
        if (length > MaxText) throw new InvalidDataException($"job id of {length} bytes");
        var job = new byte[length];
        await ReadExactlyAsync(s, job, ct).ConfigureAwait(false);
        return new Hello(BinaryPrimitives.ReadUInt16LittleEndian(head.AsSpan(4)), BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(6)),
            BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(10)), Encoding.UTF8.GetString(job));
    }

    // reply: magic u32, accepted u8, rank i32, reason (u16 length + UTF-8)
    static byte[] EncodeReply(bool accepted, int rank, string? reason)
    {
        var text = Encoding.UTF8.GetBytes(reason ?? "");
        var b = new byte[11 + text.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(b, ReplyMagic);
        b[4] = accepted ? (byte)1 : (byte)0;
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(5), rank);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(9), checked((ushort)text.Length));
        text.CopyTo(b, 11);
        return b;
    }

    static async Task<(bool Accepted, int Rank, string Reason)> ReadReplyAsync(Socket s, CancellationToken ct)
    {
        var head = new byte[11];
        await ReadExactlyAsync(s, head, ct).ConfigureAwait(false);
        if (BinaryPrimitives.ReadUInt32LittleEndian(head) != ReplyMagic)
            throw new InvalidDataException("the listener did not answer with a DistTrain ring reply");
        int length = BinaryPrimitives.ReadUInt16LittleEndian(head.AsSpan(9));
        if (length > MaxText) throw new InvalidDataException($"reason of {length} bytes");
        var text = new byte[length];
        await ReadExactlyAsync(s, text, ct).ConfigureAwait(false);
        return (head[4] == 1, BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(5)), Encoding.UTF8.GetString(text));
    }

    static async Task SendAsync(Socket s, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        while (data.Length > 0) data = data[await s.SendAsync(data, SocketFlags.None, ct).ConfigureAwait(false)..];
    }

    static async Task ReadExactlyAsync(Socket s, Memory<byte> into, CancellationToken ct)
    {
        while (into.Length > 0)
        {
            int n = await s.ReceiveAsync(into, SocketFlags.None, ct).ConfigureAwait(false);
            if (n == 0) throw new EndOfStreamException("the connection closed during the handshake");
            into = into[n..];
        }
    }
}
