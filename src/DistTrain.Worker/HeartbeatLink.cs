using System.Diagnostics;
using DistTrain.Distributed;
using DistTrain.Protocol.V1;
using DistTrain.Training.Cluster;
using Grpc.Core;

namespace DistTrain.Worker;

/// <summary>
/// A rank's heartbeat stream: a beat up every heartbeat.interval_s, the coordinator's answer to every beat down.
/// A STOP, a broken stream or a coordinator silent for heartbeat.timeout_s sets <see cref="StopReason"/>, cancels
/// <see cref="Stopping"/> and aborts the communicator, so nothing waits on a lost peer. A RESTART (an elastic job opened a
/// new generation) does the same with <see cref="Restart"/> set: the worker keeps its process and registers again.
/// Opened right after registration, so a rank that fails while it connects to its peers still hears why the job stopped.
/// In an elastic job a lost coordinator is waited for (heartbeat.connect_timeout_s): `launch` starts it again, the stream is
/// opened anew, and training, which does not go through the coordinator, goes on meanwhile.
/// </summary>
sealed class HeartbeatLink : IAsyncDisposable
{
    AsyncDuplexStreamingCall<HeartbeatRequest, HeartbeatReply> _call;   // the current stream: a restarted coordinator gets a new one
    readonly Protocol.V1.Coordinator.CoordinatorClient _client;
    readonly double? _coordinatorGrace;
    long _lostSince;        // when the coordinator was lost (0: connected)
    int _reconnecting;
    readonly CancellationTokenSource _stopping, _beatsDone;
    readonly TaskCompletionSource<string> _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    volatile HeartbeatReply? _restart;
    Task _listening;
    readonly Task _beating;
    ICommunicator? _comm;
    readonly Action<HeartbeatReply>? _onStop;
    long _lastAnswer = Stopwatch.GetTimestamp();   // the coordinator answers every beat

    /// <param name="onStop">a graceful stop's answers (STOP_REQUESTED, STOP_AT), handed on as they come; null: ignored</param>
    /// <param name="coordinatorGrace">seconds to wait for a lost coordinator to come back (an elastic job); null: a lost coordinator stops the rank</param>
    public HeartbeatLink(Protocol.V1.Coordinator.CoordinatorClient client, ClusterManifest manifest, Func<HeartbeatRequest> beat, CancellationToken ct,
        Action<HeartbeatReply>? onStop = null, double? coordinatorGrace = null)
    {
        _onStop = onStop;
        _client = client;
        _coordinatorGrace = coordinatorGrace;
        _stopping = CancellationTokenSource.CreateLinkedTokenSource(ct);
        _beatsDone = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token);
        _call = client.Heartbeat(cancellationToken: _stopping.Token);
        var first = _call;
        _listening = Task.Run(() => ListenAsync(first));
        _beating = Task.Run(() => BeatAsync(manifest, beat));
    }

    /// <summary>Cancelled when the job stops (or the process is interrupted): training and every call end.</summary>
    public CancellationToken Stopping => _stopping.Token;

    /// <summary>Why the coordinator stopped this rank, or why it is deemed gone; null while the job runs or when it restarts.</summary>
    public string? StopReason => _restart is null && _stopped.Task.IsCompletedSuccessfully ? _stopped.Task.Result : null;

    /// <summary>The coordinator opened a new generation (its number and cause): register again; null otherwise.</summary>
    public (int Generation, string Cause)? Restart => _restart is { } r ? (r.Generation, r.Reason) : null;

    /// <summary>The communicator a stop aborts, once connected.</summary>
    public void Guard(ICommunicator comm)
    {
        Volatile.Write(ref _comm, comm);
        if (StopReason is not null) comm.Abort();   // the stop came while it connected
    }

    /// <summary>The stop reason (or the restart's cause, with <see cref="Restart"/> set) when it comes within <paramref name="timeout"/>; null otherwise.</summary>
    public async Task<string?> WaitForStopAsync(TimeSpan timeout)
    {
        try { return await _stopped.Task.WaitAsync(timeout); }
        catch (TimeoutException) { return null; }
    }

    /// <summary>Stops beating (the rank finished), without cancelling a write under way: that would reset the call before Finish.</summary>
    public async Task EndBeatsAsync()
    {
        _beatsDone.Cancel();
        await _beating;
    }

    /// <summary>Ends the stream after Finish: a stream that ends before Finish reads as a lost rank.</summary>
    public async Task CompleteAsync()
    {
        try { await Volatile.Read(ref _call).RequestStream.CompleteAsync(); }
        catch (Exception e) when (e is RpcException or InvalidOperationException) { }   // the coordinator may have closed it already
    }

    async Task ListenAsync(AsyncDuplexStreamingCall<HeartbeatRequest, HeartbeatReply> call)
    {
        try
        {
            await foreach (var command in call.ResponseStream.ReadAllAsync(_stopping.Token))
            {
                Interlocked.Exchange(ref _lastAnswer, Stopwatch.GetTimestamp());
                Interlocked.Exchange(ref _lostSince, 0);
                if (command.Command is HeartbeatReply.Types.Command.StopRequested or HeartbeatReply.Types.Command.StopAt) _onStop?.Invoke(command);
                if (command.Command == HeartbeatReply.Types.Command.Stop)
                {
                    Stop($"stopped by the coordinator: {command.Reason}");
                    return;
                }
                if (command.Command == HeartbeatReply.Types.Command.Restart)
                {
                    _restart = command;
                    Stop($"generation {command.Generation} opened: {command.Reason}");
                    return;
                }
            }
        }
        catch (Exception) when (_stopping.IsCancellationRequested) { }
        catch (RpcException e) { Lost($"lost the coordinator ({e.Status.Detail})", call); }
    }

    async Task BeatAsync(ClusterManifest manifest, Func<HeartbeatRequest> beat)
    {
        while (!_beatsDone.IsCancellationRequested)
        {
            try
            {
                // not _beatsDone: cancelling a write cancels the whole call, and a stream reset before Finish reads as a lost rank
                var call = Volatile.Read(ref _call);
                try { await call.RequestStream.WriteAsync(beat(), _stopping.Token); }
                catch (Exception) when (_coordinatorGrace is not null && !_stopping.IsCancellationRequested) { Lost("lost the coordinator (a heartbeat could not be sent)", call); }
                await Task.Delay(TimeSpan.FromSeconds(manifest.HeartbeatIntervalSeconds), _beatsDone.Token);
                double silent = Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastAnswer)).TotalSeconds;
                if (silent > manifest.HeartbeatTimeoutSeconds)
                {
                    Lost($"lost the coordinator at {manifest.CoordinatorAddress}: no answer to a heartbeat for {silent:F0} s (heartbeat.timeout_s {manifest.HeartbeatTimeoutSeconds}); it is frozen or cut off", Volatile.Read(ref _call));
                    if (_coordinatorGrace is null) return;
                }
            }
            catch (Exception) { return; }   // stopping, or the call ended: the listener reports why
        }
    }

    /// <summary>
    /// The coordinator is gone or silent on <paramref name="call"/>. Without a grace the rank stops; in an elastic job a new
    /// stream is opened every half second until the coordinator (restarted by `launch`) answers, or the grace has passed.
    /// </summary>
    void Lost(string reason, AsyncDuplexStreamingCall<HeartbeatRequest, HeartbeatReply> call)
    {
        if (_coordinatorGrace is not { } grace || _stopping.IsCancellationRequested)
        {
            Stop(reason);
            return;
        }
        if (call != Volatile.Read(ref _call) || Interlocked.CompareExchange(ref _reconnecting, 1, 0) != 0) return;   // already being replaced
        Interlocked.CompareExchange(ref _lostSince, Stopwatch.GetTimestamp(), 0);
        double lost = Stopwatch.GetElapsedTime(Interlocked.Read(ref _lostSince)).TotalSeconds;
        if (lost > grace)
        {
            Stop($"{reason}; it did not come back within {grace:F0} s (heartbeat.connect_timeout_s)");
            return;
        }
        _ = Task.Run(async () =>
        {
            try { await Task.Delay(500, _stopping.Token); }
            catch (OperationCanceledException) { return; }
            var next = _client.Heartbeat(cancellationToken: _stopping.Token);
            Interlocked.Exchange(ref _lastAnswer, Stopwatch.GetTimestamp());
            Volatile.Write(ref _call, next);
            Volatile.Write(ref _reconnecting, 0);
            call.Dispose();
            _listening = Task.Run(() => ListenAsync(next));
        });
    }

    void Stop(string reason)
    {
        if (!_stopped.TrySetResult(reason)) return;
        _stopping.Cancel();
        Volatile.Read(ref _comm)?.Abort();   // a collective waiting on a lost peer fails now, not after a timeout
    }

    public async ValueTask DisposeAsync()
    {
        _stopping.Cancel();
        await Task.WhenAll(_listening, _beating).WaitAsync(TimeSpan.FromSeconds(5)).ContinueWith(_ => { });
        Volatile.Read(ref _call).Dispose();
        _beatsDone.Dispose();
        _stopping.Dispose();
    }
}
