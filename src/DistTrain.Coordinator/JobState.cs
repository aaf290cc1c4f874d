using System.Diagnostics;
using DistTrain.Protocol.V1;
using DistTrain.Training.Cluster;
using DistTrain.Training.Config;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace DistTrain.Coordinator;

/// <summary>
/// The job as the coordinator knows it: waiting for workers, running, stopping, recovering, failed or
/// finished; who registered, each rank's progress and last heartbeat. All transitions happen
/// under one lock; waiters (Register, Rendezvous, Heartbeat) wait on tasks completed here.
/// An elastic job (elastic.max_restarts) answers a lost, hung or broken rank with a new generation instead of failing:
/// the survivors are told to register again (RESTART), the lost worker's replacement registers like a new one, and once
/// every slot is back, or elastic.replace_wait_s passed with at least elastic.min_workers, ranks are handed out again on
/// the workers present, restoring the newest in-memory snapshot still held or the last committed checkpoint. The votes
/// (<see cref="CheckpointVotes"/>, <see cref="SnapshotVotes"/>) and the failure history (<see cref="RecoveryHistory"/>) have
/// classes of their own.
/// </summary>
sealed class JobState
{
    sealed class Rank(int rank, RegisterRequest request)
    {
        public int Index { get; } = rank;
        public RegisterRequest Request { get; } = request;
        public int Step;
        public long Tokens;
        public double Loss = double.NaN;
        public DateTime LastHeartbeat = DateTime.UtcNow;
        public bool Finished;
        public bool ReportedFailure;   // it sent its failure: its stream ending afterwards is not a loss
        public readonly RankTiming Timing = new();
    }

    /// <summary>The ranks a new generation starts on: each reply's rank, world size, rendezvous and data shards.</summary>
    public delegate RegisterReply Assign(int rank, int worldSize, RegisterRequest worker);

    readonly object _lock = new();
    readonly ClusterManifest _manifest;
    readonly Assign _assignment;
    readonly ElasticOptions _elastic;
    readonly List<(RegisterRequest Request, TaskCompletionSource<RegisterReply> Reply)> _waiting = [];
    readonly Dictionary<int, Rank> _ranks = [];
    TaskCompletionSource<byte[]> _ncclId = new(TaskCreationOptions.RunContinuationsAsynchronously);   // this generation's
    readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    readonly CheckpointVotes _saves = new();
    readonly SnapshotVotes _snapshots = new();
    readonly Stragglers _stragglers;
    readonly ILogger _log;
    readonly Activity? _span;
    JobStatus.Types.State _state = JobStatus.Types.State.Waiting;
    string _reason = "";
    int _checkpointStep;
    string _checkpointPath = "", _checkpointError = "";
    // a graceful stop: the exit code of the signal that asked for it (0: none), each rank's finished steps when it
    // acknowledged, and the step every rank stops after (0: not agreed yet); see StopGate for why this is safe
    int _stopExitCode, _stopStep;
    bool _stoppedEarly;
    readonly Dictionary<int, int> _stopAcks = [];
    // generations: the current one, its world size, the failures recovered from, and since when the current recovery waits
    int _generation, _worldSize;
    readonly RecoveryHistory _recoveries = new();
    readonly Stopwatch _waitingSince = Stopwatch.StartNew();
    // an elastic job's state on disk, for a restarted coordinator (JobStateFile): the run and where to write it
    string _runId = "";
    Action<PersistedJob>? _persist;
    // the state file's writes in order: a change's sequence number (under _lock), the newest written (under _fileLock)
    readonly object _fileLock = new();
    long _persisted, _written;

    /// <param name="assignment">rank, world size -> the reply it gets (rank, rendezvous, data shards)</param>
    /// <param name="telemetry">the straggler rule (factor, duration)</param>
    /// <param name="span">the job's span: straggler and recovery events are added to it</param>
    /// <param name="elastic">how the job recovers from a lost worker; null: it does not (the first failure ends it)</param>
    public JobState(ClusterManifest manifest, Assign assignment, TelemetryOptions? telemetry = null, ILogger? log = null, Activity? span = null,
        ElasticOptions? elastic = null)
    {
        _manifest = manifest;
        _assignment = assignment;
        _elastic = elastic ?? new ElasticOptions();
        _worldSize = manifest.WorldSize;
        telemetry ??= new TelemetryOptions();
        _stragglers = new Stragglers(telemetry.StragglerFactor, TimeSpan.FromSeconds(telemetry.StragglerAfterSeconds));
        _log = log ?? NullLogger.Instance;
        _span = span;
        CoordinatorDiagnostics.Watch(this);
        _stopped.Task.ContinueWith(_ => CoordinatorDiagnostics.Forget(this), TaskScheduler.Default);
    }

    /// <summary>Completes when the job stops for good (finished or failed).</summary>
    public Task Stopped => _stopped.Task;
    public bool Failed { get { lock (_lock) return _state == JobStatus.Types.State.Failed; } }
    public string Reason { get { lock (_lock) return _reason; } }

    /// <summary>Every change of the job from now on is handed to <paramref name="write"/> (an elastic job's <see cref="JobStateFile"/>).</summary>
    public void PersistTo(string runId, Action<PersistedJob> write)
    {
        lock (_lock) (_runId, _persist) = (runId, write);
    }

    void Persist()
    {
        if (_persist is { } write) WriteInOrder(write, Captured(), ++_persisted);
    }

    /// <summary>
    /// As <see cref="Persist"/>, but the file is written after the lock is released, in the background: a snapshot's last vote
    /// is answered without waiting for an fsync (which waits behind a checkpoint's gigabytes being written: 1 s on a GPU host).
    /// A coordinator that dies before the write finishes forgets that snapshot only; its workers then restore the disk checkpoint.
    /// </summary>
    void PersistSoon()
    {
        if (_persist is not { } write) return;
        var (state, sequence) = (Captured(), ++_persisted);
        _ = Task.Run(() =>
        {
            try { WriteInOrder(write, state, sequence); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { CoordinatorLog.StateNotWritten(_log, _manifest.Job, e.Message); }
        });
    }

    /// <summary>Writes a state unless a newer one (a higher sequence number, taken under the job's lock) is on disk already.</summary>
    void WriteInOrder(Action<PersistedJob> write, PersistedJob state, long sequence)
    {
        lock (_fileLock)
        {
            if (sequence <= _written) return;
            write(state);
            _written = sequence;
        }
    }

    PersistedJob Captured() => new(_manifest.Job, _runId, _state.ToString(), _generation, _worldSize,
        _ranks.Values.OrderBy(r => r.Index).Select(r => new PersistedRank(r.Index, r.Request.NodeRank, r.Request.LocalSlot, r.Request.Host, r.Request.Pid, r.Request.RingEndpoint)).ToList(),
        _checkpointStep, _checkpointPath,
        _recoveries.Persisted())
    {
        Snapshot = _snapshots.Committed,
    };

    /// <summary>
    /// A restarted coordinator carries on from what its predecessor persisted: a running generation goes on with the same
    /// ranks (their heartbeats reconnect; nothing is trained again), a recovery in progress waits for its workers again.
    /// </summary>
    public void Restore(PersistedJob job)
    {
        lock (_lock)
        {
            (_generation, _worldSize, _checkpointStep, _checkpointPath) = (job.Generation, job.WorldSize, job.CheckpointStep, job.CheckpointPath);
            _snapshots.Committed = job.Snapshot;
            bool recovering = job.State == nameof(JobStatus.Types.State.Recovering);
            _recoveries.Restore(job.Recoveries, recovering);
            if (recovering) _state = JobStatus.Types.State.Recovering;
            else
            {
                foreach (var r in job.Ranks)
                    _ranks[r.Rank] = new Rank(r.Rank, new RegisterRequest { Job = job.Job, NodeRank = r.NodeRank, LocalSlot = r.LocalSlot, Host = r.Host, Pid = r.Pid, RingEndpoint = r.RingEndpoint });
                _state = JobStatus.Types.State.Running;
            }
            CoordinatorLog.Restored(_log, _manifest.Job, _generation, _state.ToString().ToLowerInvariant(), _worldSize, _checkpointStep);
        }
    }

    /// <summary>The exit code of a graceful stop (130 SIGINT, 143 SIGTERM; 0: none asked for).</summary>
    public int StopExitCode { get { lock (_lock) return _stopExitCode; } }

    /// <summary>The job ended by a graceful stop: the step every rank stopped after and the last committed checkpoint.</summary>
    public (int Step, string Checkpoint)? StoppedAt { get { lock (_lock) return _stoppedEarly ? (_stopStep, _checkpointPath) : null; } }

    /// <summary>
    /// A signal reached a process of the job: every rank is asked for its finished steps (<see cref="ReplyTo"/>),
    /// then told the step to stop after; they save a checkpoint there through the usual two-phase commit.
    /// A job still waiting for workers has nothing to save: it ends at once.
    /// </summary>
    public StopJobReply RequestStop(StopJobRequest request)
    {
        lock (_lock)
        {
            if (_state == JobStatus.Types.State.Waiting)
            {
                _stopExitCode = request.ExitCode;
                CoordinatorLog.StopRequested(_log, _manifest.Job, request.From, request.ExitCode);
                Fail($"stopped by {request.From} before every worker registered; nothing was trained or saved");
                return new StopJobReply { State = JobStatus.Types.State.Waiting };
            }
            if (_state == JobStatus.Types.State.Recovering)
            {
                _stopExitCode = request.ExitCode;
                CoordinatorLog.StopRequested(_log, _manifest.Job, request.From, request.ExitCode);
                Fail($"stopped by {request.From} while recovering from a failure; " +
                     (_checkpointPath.Length > 0 ? $"the last checkpoint is {_checkpointPath} (step {_checkpointStep})" : "no checkpoint was committed"));
                return new StopJobReply { State = JobStatus.Types.State.Recovering };
            }
            if (_state == JobStatus.Types.State.Running)
            {
                (_state, _stopExitCode) = (JobStatus.Types.State.Stopping, request.ExitCode);
                CoordinatorLog.StopRequested(_log, _manifest.Job, request.From, request.ExitCode);
            }
            return new StopJobReply { State = _state };
        }
    }

    /// <summary>The answer to a rank's heartbeat: carry on, register again for a new generation, or the stop in progress (acknowledge, or the agreed step).</summary>
    public HeartbeatReply ReplyTo(int rank, int generation = 0)
    {
        lock (_lock)
        {
            if (generation < _generation)
                return new HeartbeatReply { Command = HeartbeatReply.Types.Command.Restart, Generation = _generation, Reason = _recoveries.Last?.Cause ?? "" };
            if (_state != JobStatus.Types.State.Stopping) return new HeartbeatReply { Command = HeartbeatReply.Types.Command.Continue };
            return _stopStep == 0
                ? new HeartbeatReply { Command = HeartbeatReply.Types.Command.StopRequested, ExitCode = _stopExitCode }
                : new HeartbeatReply { Command = HeartbeatReply.Types.Command.StopAt, StopStep = _stopStep, ExitCode = _stopExitCode };
        }
    }

    /// <summary>
    /// Holds the slot until the whole world registered, then answers with the rank. The registration is a lease
    /// on the slot for as long as its call is open: <paramref name="abandoned"/> (the call's cancellation: the
    /// worker died or gave up) frees the slot again while the job waits, so a restarted worker can take it.
    /// While an elastic job recovers, the survivors and replacements register here for the next generation; a
    /// replacement that comes after a generation started without it is held until the next committed checkpoint.
    /// </summary>
    public Task<RegisterReply> Register(RegisterRequest request, CancellationToken abandoned = default)
    {
        lock (_lock)
        {
            if (request.Job != _manifest.Job)
                throw new RpcException(new Status(StatusCode.FailedPrecondition, $"job: this coordinator runs '{_manifest.Job}', not '{request.Job}'; check the worker's --manifest"));
            if (_state == JobStatus.Types.State.Failed)
                throw new RpcException(new Status(StatusCode.Aborted, _reason));
            if (_state == JobStatus.Types.State.Finished)
                throw new RpcException(new Status(StatusCode.OutOfRange, $"job '{_manifest.Job}' already finished"));
            bool rejoin = _state is JobStatus.Types.State.Running && _elastic.Enabled && _worldSize < _manifest.WorldSize;
            if (_state is not (JobStatus.Types.State.Waiting or JobStatus.Types.State.Recovering) && !rejoin)
                throw new RpcException(new Status(StatusCode.FailedPrecondition, $"job '{_manifest.Job}' is already {_state.ToString().ToLowerInvariant()} with world size {_worldSize}; a worker cannot join a started job"));
            if (request.NodeRank < 0 || request.NodeRank >= _manifest.Nodes.Count)
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"node_rank: {request.NodeRank} is not one of the manifest's {_manifest.Nodes.Count} nodes"));
            var node = _manifest.Nodes[request.NodeRank];
            if (request.LocalSlot < 0 || request.LocalSlot >= node.Slots)
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"local_slot: {request.LocalSlot} is not one of node {request.NodeRank} ({node.Host})'s {node.Slots} slots"));
            if (_waiting.Any(w => w.Request.NodeRank == request.NodeRank && w.Request.LocalSlot == request.LocalSlot))
                throw new RpcException(new Status(StatusCode.AlreadyExists, $"node {request.NodeRank} slot {request.LocalSlot} registered twice; each slot runs one worker"));
            if (rejoin && _ranks.Values.Any(r => r.Request.NodeRank == request.NodeRank && r.Request.LocalSlot == request.LocalSlot))
                throw new RpcException(new Status(StatusCode.AlreadyExists, $"node {request.NodeRank} slot {request.LocalSlot} is training in generation {_generation}; each slot runs one worker"));

            var reply = new TaskCompletionSource<RegisterReply>(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiting.Add((request, reply));
            if (rejoin) CoordinatorLog.Rejoining(_log, _manifest.Job, request.NodeRank, request.LocalSlot, request.Host);
            if (!rejoin && _waiting.Count == _manifest.WorldSize) Start();
            else abandoned.Register(() => Abandon(request, reply));
            return reply.Task;
        }
    }

    void Abandon(RegisterRequest request, TaskCompletionSource<RegisterReply> reply)
    {
        lock (_lock)
        {
            // once a generation started with the worker the rank is assigned: a dead worker is then found by its heartbeat
            if (_waiting.RemoveAll(w => w.Reply == reply) == 0) return;
            reply.TrySetCanceled();
            CoordinatorLog.Abandoned(_log, _manifest.Job, request.NodeRank, request.LocalSlot, request.Host, request.Pid);
        }
    }

    /// <summary>A generation starts on the workers registered: ranks in manifest order (node, then slot), 0..n-1.</summary>
    void Start()
    {
        var members = _waiting.OrderBy(w => _manifest.RankOf(w.Request.NodeRank, w.Request.LocalSlot)).ToList();
        _waiting.Clear();
        _worldSize = members.Count;
        _ranks.Clear();
        _stopAcks.Clear();
        var endpoints = members.Select(w => w.Request.RingEndpoint).ToList();
        // a later generation restores the newest state the job still has: a snapshot in the workers' memory, else the last checkpoint
        string? passedOver = null;
        var snapshot = _generation > 0 ? _snapshots.RestoreFor(members.Select(m => m.Request).ToList(), _checkpointStep, out passedOver) : null;
        string restore = _generation > 0 && snapshot is null ? _checkpointPath : "";
        for (int rank = 0; rank < members.Count; rank++)
        {
            var (request, reply) = members[rank];
            _ranks[rank] = new Rank(rank, request);
            CoordinatorLog.Registered(_log, _manifest.Job, rank, request.Host, request.Pid);
            var r = _assignment(rank, _worldSize, request);
            r.RingEndpoints.AddRange(endpoints);
            (r.Generation, r.RestoreFrom, r.Snapshot) = (_generation, restore, snapshot?.Clone());
            reply.SetResult(r);
        }
        _state = JobStatus.Types.State.Running;
        Persist();
        if (_generation == 0)
        {
            CoordinatorLog.Started(_log, _manifest.Job, _worldSize);
            return;
        }
        var recovery = _recoveries.Last!;
        (recovery.RestoredStep, recovery.WorldSize, recovery.SecondsToRestart) =
            (snapshot?.Step ?? (restore.Length > 0 ? _checkpointStep : 0), _worldSize, _recoveries.Seconds);
        recovery.RestoredFrom = snapshot is not null ? "snapshot" : restore.Length > 0 ? "checkpoint" : "start";
        string restored = snapshot is not null ? $"restoring the in-memory snapshot of step {snapshot.Step} from the workers' memory"
            : (restore.Length > 0 ? $"restoring the checkpoint of step {_checkpointStep}" : "from the start (no checkpoint was committed)")
              + (passedOver is null ? "" : $"; {passedOver}");
        CoordinatorLog.GenerationStarted(_log, _manifest.Job, _generation, _worldSize, _manifest.WorldSize, restored, recovery.SecondsToRestart);
        _span?.AddEvent(new ActivityEvent("generation.started", tags: new()
        {
            ["disttrain.generation"] = _generation, ["disttrain.world_size"] = _worldSize, ["disttrain.restored_step"] = recovery.RestoredStep,
            ["disttrain.restored_from"] = recovery.RestoredFrom,
            ["disttrain.seconds_to_restart"] = recovery.SecondsToRestart,
        }));
    }

    /// <summary>
    /// A rank was lost, hung or broke its collective. An elastic job with restarts left opens the next generation: every
    /// rank is told to register again (the lost one's replacement comes from `launch` on its node); otherwise the job fails.
    /// </summary>
    void Failure(string reason, Rank? failed)
    {
        // a rank finishes only after the last step, whose all-reduce every rank took part in: the training is complete
        if (_state == JobStatus.Types.State.Running && _ranks.Values.FirstOrDefault(r => r.Finished) is { } done)
        {
            CompleteAfterLastStep($"rank {done.Index} finished the last step before this: {reason}");
            return;
        }
        // a graceful stop in progress ends with the failure: its checkpoint cannot be completed
        if (!_elastic.Enabled || _state != JobStatus.Types.State.Running || _recoveries.Restarts >= _elastic.MaxRestarts)
        {
            Fail(_recoveries.All.Count == 0 ? reason : $"{reason}; {_recoveries.Summary(_elastic.MaxRestarts)}");
            return;
        }
        OpenGeneration(reason, failed);
    }

    /// <summary>A rank was lost after the last step: every step was trained (and the final checkpoint committed): the job is finished.</summary>
    void CompleteAfterLastStep(string what)
    {
        _state = JobStatus.Types.State.Finished;
        Persist();
        CoordinatorLog.FinishedDespite(_log, _manifest.Job, what);
        foreach (var (_, reply) in _waiting) reply.TrySetException(new RpcException(new Status(StatusCode.OutOfRange, $"job '{_manifest.Job}' already finished")));
        _waiting.Clear();
        _stopped.TrySetResult();
    }

    void OpenGeneration(string cause, Rank? failed)
    {
        _generation++;
        var recovery = _recoveries.Open(_generation, cause, failed?.Index ?? -1, failed?.Request.Host ?? "", failed?.Request.Pid ?? 0,
            _ranks.Count == 0 ? 0 : _ranks.Values.Max(r => r.Step));
        _state = JobStatus.Types.State.Recovering;
        _ranks.Clear();
        _ncclId.TrySetException(new RpcException(new Status(StatusCode.Aborted, $"generation {_generation} opened: {cause}")));
        _ncclId = new(TaskCreationOptions.RunContinuationsAsynchronously);
        _saves.Abandon($"checkpoint abandoned: generation {_generation} opened: {cause}");
        _snapshots.Abandon($"snapshot abandoned: generation {_generation} opened: {cause}");
        if (!RecoveryHistory.IsRejoin(recovery)) CoordinatorDiagnostics.Restarts.Add(1, new KeyValuePair<string, object?>("disttrain.job", _manifest.Job));
        CoordinatorLog.Recovering(_log, _manifest.Job, _generation, _recoveries.Restarts, _elastic.MaxRestarts, cause);
        Persist();
        _span?.AddEvent(new ActivityEvent("generation.opened", tags: new()
        {
            ["disttrain.generation"] = _generation, ["disttrain.cause"] = cause, ["disttrain.rank"] = recovery.Rank, ["host.name"] = recovery.Host,
            ["disttrain.failed_at_step"] = recovery.FailedAtStep,
        }));
        // workers held since the last generation started (a late replacement) are part of this one
        if (_waiting.Count == _manifest.WorldSize) Start();
    }

    public Task<byte[]> Rendezvous(RendezvousRequest request)
    {
        lock (_lock)
        {
            if (request.Generation != _generation)
                throw new RpcException(new Status(StatusCode.Aborted, $"generation {request.Generation} is over; the job is in generation {_generation}"));
            if (request.Rank == 0 && request.NcclUniqueId.Length > 0) _ncclId.TrySetResult(request.NcclUniqueId.ToByteArray());
            return _ncclId.Task;
        }
    }

    public void Heartbeat(HeartbeatRequest beat)
    {
        lock (_lock)
        {
            if (beat.Generation != _generation || _state == JobStatus.Types.State.Recovering || !_ranks.TryGetValue(beat.Rank, out var r)) return;
            (r.Step, r.Tokens, r.Loss, r.LastHeartbeat) = (beat.Step, beat.Tokens, beat.Loss, DateTime.UtcNow);
            if (_generation > 0 && _recoveries.Last is { SecondsToFirstStep: 0, RestoredStep: >= 0 } recovery && beat.Step > recovery.RestoredStep)
            {
                recovery.SecondsToFirstStep = _recoveries.Seconds;
                CoordinatorLog.RecoveredFromFailure(_log, _manifest.Job, _generation, beat.Step, recovery.SecondsToFirstStep, Math.Max(0, recovery.FailedAtStep - recovery.RestoredStep));
                _span?.AddEvent(new ActivityEvent("generation.recovered", tags: new()
                {
                    ["disttrain.generation"] = _generation, ["disttrain.seconds_to_first_step"] = recovery.SecondsToFirstStep,
                    ["disttrain.steps_lost"] = Math.Max(0, recovery.FailedAtStep - recovery.RestoredStep),
                }));
            }
            if (beat.ComputeSeconds > 0) r.Timing.ComputeSeconds = beat.ComputeSeconds;
            if (beat.StopAcknowledged && _state == JobStatus.Types.State.Stopping && _stopStep == 0 && _stopAcks.TryAdd(beat.Rank, beat.StopFinishedSteps)
                && _stopAcks.Count == _worldSize)
            {
                // no rank finishes more than one step past its acknowledgement: the largest + 1 is ahead of every rank
                _stopStep = _stopAcks.Values.Max() + 1;
                CoordinatorLog.StopAgreed(_log, _manifest.Job, _stopStep);
            }
        }
    }

    /// <summary>Phase 1 of a checkpoint: a rank's vote; completes when every rank of the job has voted for that step.</summary>
    public Task<CheckpointVoteReply> CheckpointVote(CheckpointVoteRequest vote)
    {
        lock (_lock)
        {
            if (_state is not (JobStatus.Types.State.Running or JobStatus.Types.State.Stopping))
                throw new RpcException(new Status(StatusCode.Aborted, $"job '{_manifest.Job}' is {_state.ToString().ToLowerInvariant()}; no checkpoint commits {_reason}"));
            if (vote.Generation != _generation)
                throw new RpcException(new Status(StatusCode.Aborted, $"checkpoint abandoned: generation {vote.Generation} is over; the job is in generation {_generation}"));
            if (!_ranks.ContainsKey(vote.Rank))
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"rank: {vote.Rank} is not a rank of this job (world size {_worldSize})"));
            return _saves.Vote(vote, _worldSize, rank => _ranks[rank].Request.Host);
        }
    }

    /// <summary>A rank holds its slices of an in-memory snapshot; completes when every rank of the generation does.</summary>
    public Task<SnapshotVoteReply> SnapshotVote(SnapshotVoteRequest vote)
    {
        lock (_lock)
        {
            if (_state is not (JobStatus.Types.State.Running or JobStatus.Types.State.Stopping) || vote.Generation != _generation)
                throw new RpcException(new Status(StatusCode.Aborted, $"snapshot abandoned: the job is {_state.ToString().ToLowerInvariant()} in generation {_generation}"));
            if (!_ranks.ContainsKey(vote.Rank))
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"rank: {vote.Rank} is not a rank of this job (world size {_worldSize})"));
            var reply = _snapshots.Vote(vote, _generation, _worldSize);
            if (reply.IsCompleted) PersistSoon();   // the last vote: a restarted coordinator knows the snapshot too
            return reply;
        }
    }

    /// <summary>Phase 2: rank 0 committed the checkpoint (or gave it up).</summary>
    public void CheckpointDone(CheckpointDoneRequest done)
    {
        lock (_lock)
        {
            if (done.Path.Length > 0)
            {
                (_checkpointStep, _checkpointPath) = (done.Step, done.Path);
                CoordinatorLog.CheckpointCommitted(_log, _manifest.Job, done.Step, done.Path);
                Persist();
                // a replacement that came back after its generation started joins now (the steps since this checkpoint are trained again)
                if (_state == JobStatus.Types.State.Running && _waiting.Count > 0)
                    OpenGeneration(RecoveryHistory.Rejoin(string.Join(", ", _waiting.Select(w => $"node {w.Request.NodeRank} slot {w.Request.LocalSlot} ({w.Request.Host})")) +
                        $" came back; the job grows from {_worldSize} workers at the checkpoint of step {done.Step}"), null);
            }
            else
            {
                _checkpointError = $"step {done.Step}: {done.Error}";
                CoordinatorLog.CheckpointFailed(_log, _manifest.Job, done.Step, done.Error);
            }
        }
    }

    public void Finish(FinishRequest request)
    {
        lock (_lock)
        {
            if (_state == JobStatus.Types.State.Waiting && request.Failed && request.Rank >= 0 && request.Rank < _manifest.WorldSize)
            {
                // a worker that failed before it registered (its config did not load): the job cannot start without it
                Fail($"rank {request.Rank} ({HostOf(request.Rank)}) failed before registering: {request.Message}");
                return;
            }
            // the previous generation's rank finished the last step while its loss opened this one: nothing is left to train
            if (!request.Failed && !request.Stopped && request.Generation == _generation - 1 && _state == JobStatus.Types.State.Recovering)
            {
                CompleteAfterLastStep($"rank {request.Rank} of generation {request.Generation} finished the last step (step {request.Step}) as generation {_generation} opened after: {_recoveries.Last!.Cause}");
                return;
            }
            if (request.Generation != _generation || !_ranks.TryGetValue(request.Rank, out var r)) return;   // an older generation's: being recovered from
            r.Step = request.Step;
            if (request.Failed)
            {
                r.ReportedFailure = true;
                string reason = $"rank {request.Rank} ({r.Request.Host}) failed at step {request.Step}: {request.Message}";
                if (request.Failure == FinishRequest.Types.Failure.Own)
                {
                    Fail(reason);   // the rank's own error is the cause: every other rank gets it in its STOP
                    return;
                }
                if (request.Failure == FinishRequest.Types.Failure.Process)
                {
                    Failure($"{reason} (the process exits: a new one can go on)", r);   // recoverable like a crash
                    return;
                }
                // a killed or failing rank breaks its peers' collectives at once, and they often report before its
                // own heartbeat stream is seen to break or its own error arrives: wait a moment so that the cause is named
                int generation = _generation;
                _ = Task.Delay(PeerReportDelay).ContinueWith(_ =>
                {
                    lock (_lock) if (_generation == generation) Failure(reason, r);
                }, TaskScheduler.Default);
                return;
            }
            r.Finished = true;
            _stoppedEarly |= request.Stopped;
            if (_state is (JobStatus.Types.State.Running or JobStatus.Types.State.Stopping) && _ranks.Values.All(x => x.Finished))
            {
                _state = JobStatus.Types.State.Finished;
                Persist();
                if (_stoppedEarly) CoordinatorLog.StoppedGracefully(_log, _manifest.Job, _stopStep, _checkpointPath);
                else CoordinatorLog.Finished(_log, _manifest.Job);
                // a replacement still waiting to rejoin has nothing left to do
                foreach (var (_, reply) in _waiting) reply.TrySetException(new RpcException(new Status(StatusCode.OutOfRange, $"job '{_manifest.Job}' already finished")));
                _waiting.Clear();
                _stopped.TrySetResult();
            }
        }
    }

    /// <summary>A rank's heartbeat stream (of <paramref name="generation"/>) broke before it finished: the worker is gone.</summary>
    public void Lost(int rank, string how, int generation = 0)
    {
        // a finishing worker sends Finish before it ends the stream, but the two travel separately: give its
        // Finish a moment to land before calling the rank lost (a peer's collective failure waits longer, 750 ms,
        // so a lost rank is still named first); a rank that reported its failure is named by that report
        _ = Task.Delay(LostGrace).ContinueWith(_ =>
        {
            lock (_lock)
            {
                // a stream of an older generation ends when its rank registers again: no loss
                if (generation != _generation || _state == JobStatus.Types.State.Recovering || !_ranks.TryGetValue(rank, out var r) || r.Finished || r.ReportedFailure) return;
                Failure($"rank {rank} (host {r.Request.Host}, pid {r.Request.Pid}) lost at step {r.Step}: {how}", r);
            }
        }, TaskScheduler.Default);
    }

    string HostOf(int rank)
    {
        foreach (var node in _manifest.Nodes)
        {
            if (rank < node.Slots) return node.Host;
            rank -= node.Slots;
        }
        return "?";
    }

    static readonly TimeSpan LostGrace = TimeSpan.FromMilliseconds(250);
    static readonly TimeSpan PeerReportDelay = TimeSpan.FromMilliseconds(750);

    /// <summary>
    /// Called periodically: a running rank silent for longer than the timeout is a failure; stragglers are reported; a
    /// recovery that waited elastic.replace_wait_s goes on with the workers it has, or fails without enough of them.
    /// </summary>
    public void CheckHeartbeats(DateTime now)
    {
        lock (_lock)
        {
            // an elastic job's workers wait for registration without a deadline of their own: the coordinator ends the wait
            if (_state == JobStatus.Types.State.Waiting && _elastic.Enabled && _waitingSince.Elapsed.TotalSeconds > _manifest.RendezvousTimeoutSeconds)
            {
                Fail($"not every worker registered within heartbeat.rendezvous_timeout_s ({_manifest.RendezvousTimeoutSeconds} s): {_waiting.Count} of {_manifest.WorldSize}");
                return;
            }
            if (_state == JobStatus.Types.State.Recovering)
            {
                double waited = _recoveries.Seconds;
                int min = _elastic.MinimumOf(_manifest.WorldSize);
                if (waited >= _elastic.ReplaceWaitSeconds && _waiting.Count >= min) Start();
                else if (waited >= _elastic.ReplaceWaitSeconds + _manifest.RendezvousTimeoutSeconds)
                    Fail($"only {_waiting.Count} of the at least {min} workers (elastic.min_workers) registered for generation {_generation} within " +
                         $"{_elastic.ReplaceWaitSeconds + _manifest.RendezvousTimeoutSeconds:F0} s (elastic.replace_wait_s + heartbeat.rendezvous_timeout_s); {_recoveries.Summary(_elastic.MaxRestarts)}");
                return;
            }
            if (_state is not (JobStatus.Types.State.Running or JobStatus.Types.State.Stopping)) return;
            ReportStragglers(now);
            foreach (var r in _ranks.Values.Where(r => !r.Finished))
            {
                var silent = (now - r.LastHeartbeat).TotalSeconds;
                if (silent > _manifest.HeartbeatTimeoutSeconds)
                {
                    Failure($"rank {r.Index} (host {r.Request.Host}, pid {r.Request.Pid}) sent no heartbeat for {silent:F0} s (heartbeat.timeout_s {_manifest.HeartbeatTimeoutSeconds}); last step {r.Step}", r);
                    return;
                }
            }
        }
    }

    void ReportStragglers(DateTime now)
    {
        var running = _ranks.Values.Where(r => !r.Finished).ToDictionary(r => r.Index, r => r.Timing);
        foreach (var (index, change) in _stragglers.Update(running, now))
        {
            var (r, t) = (_ranks[index], running[index]);
            if (change == Stragglers.Change.Recovered)
            {
                CoordinatorLog.Recovered(_log, _manifest.Job, index, r.Request.Host, t.Ratio);
                _span?.AddEvent(new ActivityEvent("straggler.recovered", tags: new() { ["disttrain.rank"] = index, ["host.name"] = r.Request.Host }));
                continue;
            }
            double median = t.ComputeSeconds - t.LatenessSeconds, since = (now - t.SlowSince!.Value).TotalSeconds;
            CoordinatorLog.Straggler(_log, _manifest.Job, index, r.Request.Host, t.ComputeSeconds, t.Ratio, median, since, t.LatenessSeconds);
            CoordinatorDiagnostics.StragglerEvents.Add(1, new KeyValuePair<string, object?>("disttrain.rank", index), new KeyValuePair<string, object?>("host.name", r.Request.Host));
            _span?.AddEvent(new ActivityEvent("straggler", tags: new()
            {
                ["disttrain.rank"] = index, ["host.name"] = r.Request.Host, ["disttrain.step"] = r.Step,
                ["disttrain.compute_seconds"] = t.ComputeSeconds, ["disttrain.median_seconds"] = median, ["disttrain.ratio"] = t.Ratio,
            }));
        }
    }

    public void Fail(string reason)
    {
        lock (_lock)
        {
            if (_state is JobStatus.Types.State.Failed or JobStatus.Types.State.Finished) return;
            _state = JobStatus.Types.State.Failed;
            _reason = reason;
            Persist();
            CoordinatorLog.Failed(_log, _manifest.Job, reason);
            foreach (var (_, reply) in _waiting) reply.TrySetException(new RpcException(new Status(StatusCode.Aborted, reason)));
            _ncclId.TrySetException(new RpcException(new Status(StatusCode.Aborted, reason)));
            _saves.Abandon($"checkpoint abandoned: {reason}");
            _snapshots.Abandon($"snapshot abandoned: {reason}");
            _stopped.TrySetResult();
        }
    }

    public JobStatus Status()
    {
        lock (_lock)
        {
            var now = DateTime.UtcNow;
            var status = new JobStatus { Job = _manifest.Job, State = _state, WorldSize = _worldSize, Registered = _waiting.Count, Reason = _reason,
                CheckpointStep = _checkpointStep, CheckpointPath = _checkpointPath, CheckpointError = _checkpointError,
                Generation = _generation, MaxRestarts = _elastic.MaxRestarts, SnapshotStep = _snapshots.Committed?.Step ?? 0 };
            status.Recoveries.AddRange(_recoveries.All.Select(r => r.Clone()));
            status.Ranks.AddRange(_ranks.Values.OrderBy(r => r.Index).Select(r => new RankStatus
            {
                Rank = r.Index, Host = r.Request.Host, Step = r.Step, Tokens = r.Tokens, Loss = r.Loss,
                SecondsSinceHeartbeat = (now - r.LastHeartbeat).TotalSeconds, Finished = r.Finished,
                ComputeSeconds = r.Timing.ComputeSeconds, LatenessSeconds = r.Timing.LatenessSeconds, Straggler = r.Timing.Straggler,
            }));
            return status;
        }
    }
}
