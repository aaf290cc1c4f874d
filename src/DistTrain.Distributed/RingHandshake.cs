using System.Net;
using System.Net.Sockets;
using System.Runtime.ExceptionServices;
using System.Text;

namespace DistTrain.Distributed;

/// <summary>
/// Sets up a rank's two ring connections: it connects to its right neighbour (retrying while that rank
/// starts) and accepts its left neighbour, both at once, since every rank does both. The connecting side
/// introduces itself (magic, protocol version, rank, world size, job id, a nonce); the accepting side answers
/// with its own nonce and a proof that it knows the job token (an HMAC-SHA256 keyed by it over both nonces and
/// what each side said); the connector checks it and answers with its own proof; the acceptor checks that and
/// gives its verdict. A process that does not know the token never joins: a connector without it is refused and
/// the acceptor goes on waiting for its real neighbour; an acceptor without it is refused by the connector.
/// Between ranks that both proved the token, a mismatch (job id, world size, rank) fails on both ends with the
/// same explanation. After the handshake the ring's traffic is plaintext.
/// </summary>
internal static partial class RingHandshake
{
    internal const ushort ProtocolVersion = 2;
    /// <summary>How long an accepted connection may take to introduce itself and prove the token before it is dropped as a stranger.</summary>
    static readonly TimeSpan HelloLimit = TimeSpan.FromSeconds(5);
    static readonly TimeSpan FirstRetry = TimeSpan.FromMilliseconds(20), LastRetry = TimeSpan.FromMilliseconds(500);

    /// <summary>This rank, as it introduces itself; Key: the job token (UTF-8), never sent.</summary>
    sealed record Me(int Rank, int WorldSize, string JobId, byte[] Key);

    public static (Socket Right, Socket Left) Establish(int rank, int worldSize, IReadOnlyList<IPEndPoint> peers, string jobId, string jobToken,
        TimeSpan timeout, CancellationToken ct)
    {
        int right = (rank + 1) % worldSize, left = (rank - 1 + worldSize) % worldSize;
        var me = new Me(rank, worldSize, jobId, Encoding.UTF8.GetBytes(jobToken));
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
                // one neighbour on both sides: its accept timeout only repeats the connect error, unless a stranger was dropped
                if (sameNeighbour && a.InnerException is null) ExceptionDispatchInfo.Throw(c);
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

    static async Task<Socket> ConnectAsync(Me me, int peer, IPEndPoint at, TimeSpan timeout, CancellationTokenSource deadline, CancellationToken ct)
    {
        Exception? last = null;
        var delay = FirstRetry;
        while (true)
        {
            var socket = new Socket(at.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(at, deadline.Token).ConfigureAwait(false);
                var hello = NewHello(ProtocolVersion, me.Rank, me.WorldSize, me.JobId);
                await SendAsync(socket, hello.Wire, deadline.Token).ConfigureAwait(false);
                var challenge = await ReadChallengeAsync(socket, deadline.Token).ConfigureAwait(false);
                if (!challenge.Accepted)
                    throw new CommunicatorException(me.Rank, peer, at, $"rank {me.Rank}: rank {peer} at {at} refused the connection: {challenge.Text}");
                if (!ProofHolds(me.Key, "acceptor", hello.Wire, challenge.Signed, challenge.Proof))
                    throw new CommunicatorException(me.Rank, peer, at,
                        $"rank {me.Rank}: the process at {at} (claiming rank {challenge.Rank} of job '{challenge.Text}') holds another job token than this rank: " +
                        $"its proof in the ring handshake is wrong, so it is not rank {peer} of this job, or this rank's token is wrong. Every rank needs the same token (the manifest's token source); another job needs its own ports");
                await SendAsync(socket, EncodeProof(Proof(me.Key, "connector", hello.Wire, challenge.Signed)), deadline.Token).ConfigureAwait(false);
                if (await ReadVerdictAsync(socket, deadline.Token).ConfigureAwait(false) is { } refusal)
                    throw new CommunicatorException(me.Rank, peer, at, $"rank {me.Rank}: rank {peer} at {at} refused the connection: {refusal}");
                if (challenge.Rank != peer)
                    throw new CommunicatorException(me.Rank, peer, at,
                        $"rank {me.Rank}: the process at {at} is rank {challenge.Rank}, not rank {peer}: the ranks' peer lists differ");
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

    static async Task<Socket> AcceptAsync(Me me, int left, IPEndPoint leftAt, Socket listener, TimeSpan timeout,
        CancellationToken deadline, CancellationToken ct)
    {
        Exception? stranger = null;   // the last connection dropped, as the inner exception of a timeout
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
                    (stranger is null ? "" : $"; dropped a connection that did not complete the ring handshake ({stranger.Message})") +
                    $". Is rank {left} running, with the same peer list and job token?", stranger);
            }
            socket.NoDelay = true;
            var from = socket.RemoteEndPoint;
            Hello hello;
            string? reason;
            try
            {
                // the whole exchange up to the proof is bounded: a stranger cannot hold this rank's only accept
                using var limit = CancellationTokenSource.CreateLinkedTokenSource(deadline);
                limit.CancelAfter(HelloLimit);
                hello = await ReadHelloAsync(socket, limit.Token).ConfigureAwait(false);
                if (hello.Version != ProtocolVersion)
                {
                    var version = $"ring protocol version {hello.Version}, this rank speaks {ProtocolVersion}: run the same DistTrain build on every rank";
                    await SendAsync(socket, NewChallenge(false, me.Rank, version, me.Key, hello.Wire).Signed, limit.Token).ConfigureAwait(false);
                    throw new InvalidDataException(version);
                }
                var challenge = NewChallenge(true, me.Rank, me.JobId, me.Key, hello.Wire);
                await SendAsync(socket, Encode(challenge), limit.Token).ConfigureAwait(false);
                byte[] proof;
                try { proof = await ReadProofAsync(socket, limit.Token).ConfigureAwait(false); }
                catch (EndOfStreamException) { throw new EndOfStreamException($"claiming rank {hello.Rank} of job '{hello.JobId}', it closed the connection instead of proving the job token (a rank whose token differs does that)"); }
                if (!ProofHolds(me.Key, "connector", hello.Wire, challenge.Signed, proof))
                {
                    var wrong = $"its proof of the job token is wrong: it does not hold the token of job '{me.JobId}' that this rank holds; every rank needs the same token (the manifest's token source)";
                    await SendAsync(socket, EncodeVerdict(wrong), limit.Token).ConfigureAwait(false);
                    throw new InvalidDataException($"claiming rank {hello.Rank} of job '{hello.JobId}', {wrong}");
                }
                // only a peer that knows the token may fail this rank: a mismatch between two ranks of the job is a configuration error
                reason = Refusal(me, left, hello);
                if (reason is null) await SendAsync(socket, EncodeVerdict(null), limit.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is SocketException or EndOfStreamException or InvalidDataException
                                      || (e is OperationCanceledException && !deadline.IsCancellationRequested))
            {
                // a stranger (or a connector that found this rank's proof wrong and hung up): drop it, wait for the real neighbour
                socket.Dispose();
                stranger = new InvalidDataException($"from {from}: {(e is OperationCanceledException ? $"no proof of the job token within {HelloLimit.TotalSeconds:F0} s" : e.Message)}", e);
                continue;
            }
            catch
            {
                socket.Dispose();
                throw;
            }
            if (reason is null) return socket;
            try { await SendAsync(socket, EncodeVerdict(reason), deadline).ConfigureAwait(false); }
            catch (Exception e) when (e is SocketException or OperationCanceledException) { }   // refusing anyway; the connector sees the closed connection
            socket.Dispose();
            throw new CommunicatorException(me.Rank, hello.Rank, from,
                $"rank {me.Rank}: refused a connection from {from} claiming rank {hello.Rank} of world size {hello.WorldSize}, job '{hello.JobId}': {reason}");
        }
    }

    static string? Refusal(Me me, int left, Hello them)
    {
        if (them.JobId != me.JobId)
            return $"job id '{them.JobId}' is not this rank's '{me.JobId}': another job is using these endpoints; give each job its own ports";
        if (them.WorldSize != me.WorldSize)
            return $"world size {them.WorldSize} is not this rank's {me.WorldSize}: start every rank with the same world size";
        if (them.Rank != left)
            return $"rank {them.Rank} is not this rank's left neighbour (rank {left}): the ranks' peer lists differ";
        return null;
    }
}
