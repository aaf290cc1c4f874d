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
/// </summary>
sealed class HeartbeatLink : IAsyncDisposable
{
    readonly AsyncDuplexStreamingCall<HeartbeatRequest, HeartbeatReply> _call;
    readonly CancellationTokenSource _stopping, _beatsDone;
    readonly TaskCompletionSource<string> _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    volatile HeartbeatReply? _restart;
    readonly Task _listening, _beating;
    ICommunicator? _comm;
    readonly Action<HeartbeatReply>? _onStop;
    long _lastAnswer = Stopwatch.GetTimestamp();   // the coordinator answers every beat

    /// <param name="onStop">a graceful stop's answers (STOP_REQUESTED, STOP_AT), handed on as they come; null: ignored</param>
    public HeartbeatLink(Protocol.V1.Coordinator.CoordinatorClient client, ClusterManifest manifest, Func<HeartbeatRequest> beat, CancellationToken ct,
        Action<HeartbeatReply>? onStop = null)
    {
        _onStop = onStop;
        _stopping = CancellationTokenSource.CreateLinkedTokenSource(ct);
        _beatsDone = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token);
        _call = client.Heartbeat(cancellationToken: _stopping.Token);
        _listening = Task.Run(ListenAsync);
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
        try { await _call.RequestStream.CompleteAsync(); }
        catch (Exception e) when (e is RpcException or InvalidOperationException) { }   // the coordinator may have closed it already
    }

    async Task ListenAsync()
    {
        try
        {
            await foreach (var command in _call.ResponseStream.ReadAllAsync(_stopping.Token))
            {
                Interlocked.Exchange(ref _lastAnswer, Stopwatch.GetTimestamp());
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
        catch (RpcException e) { Stop($"lost the coordinator ({e.Status.Detail})"); }
    }

    async Task BeatAsync(ClusterManifest manifest, Func<HeartbeatRequest> beat)
    {
        while (!_beatsDone.IsCancellationRequested)
        {
            try
            {
                // not _beatsDone: cancelling a write cancels the whole call, and a stream reset before Finish reads as a lost rank
                await _call.RequestStream.WriteAsync(beat(), _stopping.Token);
                await Task.Delay(TimeSpan.FromSeconds(manifest.HeartbeatIntervalSeconds), _beatsDone.Token);
                double silent = Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastAnswer)).TotalSeconds;
                if (silent > manifest.HeartbeatTimeoutSeconds)
                {
                    Stop($"lost the coordinator at {manifest.CoordinatorAddress}: no answer to a heartbeat for {silent:F0} s (heartbeat.timeout_s {manifest.HeartbeatTimeoutSeconds}); it is frozen or cut off");
                    return;
                }
            }
            catch (Exception) { return; }   // stopping, or the call ended: the listener reports why
        }
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
        _call.Dispose();
        _beatsDone.Dispose();
        _stopping.Dispose();
    }
}
