using System.Text.Json;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using DistTrain.Data;
using DistTrain.Distributed;
using DistTrain.Distributed.Nccl;
using DistTrain.Protocol.V1;
using DistTrain.Training;
using DistTrain.Training.Checkpointing;
using DistTrain.Training.Cluster;
using DistTrain.Training.Config;
using DistTrain.Training.Diagnostics;
using DistTrain.Training.Snapshots;
using SnapshotRestore = DistTrain.Training.Snapshots.SnapshotRestore;
using DistTrain.Training.Stopping;
using DistTrain.Telemetry;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace DistTrain.Worker;

/// <summary>Raised when a worker cannot join or is told to stop; the message names the cause.</summary>
public sealed class WorkerException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// One worker process: registers with the coordinator, gets its rank, communicator rendezvous and
/// data shards, trains with the same <see cref="Trainer"/> a single process uses, and streams
/// heartbeats. A STOP from the coordinator aborts the communicator so nothing waits on a lost peer.
/// </summary>
public static class WorkerRunner
{
    /// <param name="logs">where the worker's log lines go; null: nowhere</param>
    /// <param name="stop">a signal to this process: the worker asks the coordinator to stop the job gracefully; after a
    /// graceful stop (asked for by any process of the job) it holds where the run stopped, and the exit code is the stop's</param>
    public static async Task<int> RunAsync(ClusterManifest manifest, TrainConfig config, int nodeRank, int localSlot,
        Func<int, ITrainingObserver?> observerForRank, ILoggerFactory? logs, CancellationToken ct, StopRequest? stop = null)
    {
        // under `disttrain launch` the job's trace context comes in TRACEPARENT, so even registering is part of the
        // job's trace; a worker started on its own joins the trace with the context its registration returns
        var launched = TelemetrySession.ParseTraceParent(Environment.GetEnvironmentVariable("TRACEPARENT"));
        var span = launched == default ? null : WorkerDiagnostics.Source.StartActivity("worker", ActivityKind.Internal, launched);
        try { return await RunAsync(manifest, config, nodeRank, localSlot, observerForRank, logs?.CreateLogger(WorkerDiagnostics.Name) ?? NullLogger.Instance, span, stop ?? new StopRequest(), ct); }
        finally { span?.Dispose(); }
    }

    static async Task<int> RunAsync(ClusterManifest manifest, TrainConfig config, int nodeRank, int localSlot,
        Func<int, ITrainingObserver?> observerForRank, ILogger log, Activity? span, StopRequest stop, CancellationToken ct)
    {
        if (nodeRank < 0 || nodeRank >= manifest.Nodes.Count)
            throw new ConfigException($"{manifest.Source}: --node-rank {nodeRank} is not one of the {manifest.Nodes.Count} nodes (0-based)");
        var node = manifest.Nodes[nodeRank];
        if (localSlot < 0 || localSlot >= node.Slots)
            throw new ConfigException($"{manifest.Source}: --local-slot {localSlot} is not one of node {nodeRank} ({node.Host})'s {node.Slots} slots");

        var token = ManifestLoader.ReadToken(manifest);
        var client = CoordinatorClient.Create(manifest, token);
        // in-memory snapshots (elastic.snapshot_interval) live as long as the process: a new generation restores them
        using var snapshots = config.Elastic.SnapshotInterval > 0 ? new SnapshotStore() : null;
        // an elastic job's generations: after a lost peer the coordinator tells this worker to register again; the process,
        // and with it the CUDA context and the compiled kernels, stays
        for (int generation = -1; ;)
        {
            var (reply, listener) = await RegisterAsync(client, manifest, node, nodeRank, localSlot, generation, config.Elastic.Enabled, snapshots?.Held, ct);
            if (reply is null)
            {
                WorkerDiagnostics.FinishedWithout(log, manifest.Job, nodeRank, localSlot);
                return 0;
            }
            var (exitCode, next) = await TrainAsync(client, manifest, token, config, reply, listener, nodeRank, observerForRank, log, span, stop, snapshots, ct);
            if (next is null) return exitCode;
            generation = reply.Generation;
        }
    }

    /// <summary>Registers for the next generation (or the first); null when the job already finished without this worker.</summary>
    /// <returns>the reply, and the ring port reserved for it (released once the communicator is built)</returns>
    static async Task<(RegisterReply?, TcpListener)> RegisterAsync(Protocol.V1.Coordinator.CoordinatorClient client, ClusterManifest manifest, NodeSpec node,
        int nodeRank, int localSlot, int generation, bool elastic, Training.Snapshots.HeldSnapshot? held, CancellationToken ct)
    {
        var (listener, endpoint) = ReserveRingPort(node.Host);
        try
        {
            // a coordinator that starts after its workers is normal: wait for it to come up (wait-for-ready), bounded
            try { await client.GetStatusAsync(new StatusRequest(), new CallOptions(deadline: DateTime.UtcNow.AddSeconds(manifest.ConnectTimeoutSeconds), cancellationToken: ct).WithWaitForReady()); }
            catch (RpcException e) when (e.StatusCode is not StatusCode.PermissionDenied) { throw FirstContactFailed(manifest, e); }
            // in an elastic job a registration may wait through a recovery (elastic.replace_wait_s), or, for a replacement that came
            // after its generation started, until the next checkpoint: the coordinator ends such waits itself when the job ends;
            // and it waits for a coordinator that `launch` is starting again
            var options = new CallOptions(deadline: elastic ? null : DateTime.UtcNow.AddSeconds(manifest.RendezvousTimeoutSeconds), cancellationToken: ct);
            var request = new RegisterRequest
            {
                Job = manifest.Job, NodeRank = nodeRank, LocalSlot = localSlot, Host = node.Host,
                RingEndpoint = endpoint, Pid = Environment.ProcessId, Generation = generation,
            };
            if (held is not null)
            {
                request.Held = new Protocol.V1.HeldSnapshot { Generation = held.Generation, Step = held.Step, WorldSize = held.WorldSize };
                request.Held.Slices.AddRange(held.Slices);
            }
            var reply = await client.RegisterAsync(request, elastic ? options.WithWaitForReady() : options);
            return (reply, listener);
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.OutOfRange)   // a replacement that came after the last step
        {
            listener.Stop();
            return (null, listener);
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Aborted)   // the job failed while this worker waited (a peer's error)
        {
            listener.Stop();
            throw new WorkerException($"stopped by the coordinator before the job started: {e.Status.Detail}", e);
        }
        catch (RpcException e)
        {
            listener.Stop();
            throw Explain(e, manifest);
        }
        catch
        {
            listener.Stop();
            throw;
        }
    }

    /// <summary>Trains one generation: (exit code, null) when the job ended for this worker; (_, generation) when a new one opened.</summary>
    static async Task<(int ExitCode, int? Next)> TrainAsync(Protocol.V1.Coordinator.CoordinatorClient client, ClusterManifest manifest, string token, TrainConfig config,
        RegisterReply reply, TcpListener listener, int nodeRank, Func<int, ITrainingObserver?> observerForRank, ILogger log, Activity? span, StopRequest stop,
        SnapshotStore? snapshots, CancellationToken ct)
    {
        listener.Stop();
        var node = manifest.Nodes[nodeRank];
        int rank = reply.Rank;
        using var joined = span is null ? WorkerDiagnostics.Source.StartActivity("worker", ActivityKind.Internal, TelemetrySession.ParseTraceParent(reply.TraceParent)) : null;
        span ??= joined;
        span?.SetTag("disttrain.job", manifest.Job).SetTag("disttrain.rank", rank).SetTag("disttrain.world_size", reply.WorldSize)
            .SetTag("disttrain.node_rank", nodeRank).SetTag("host.name", node.Host).SetTag("disttrain.generation", reply.Generation);
        var progress = new Progress(rank, reply.Generation);
        var gate = new StopGate();
        int stopExitCode = 0;
        // a graceful stop's moves come with the heartbeat answers: acknowledge (the next beat carries it), then the agreed step
        void OnStopCommand(HeartbeatReply command)
        {
            if (command.Command == HeartbeatReply.Types.Command.StopRequested) progress.StopFinishedSteps = gate.Acknowledge();
            if (command.Command != HeartbeatReply.Types.Command.StopAt) return;
            stopExitCode = command.ExitCode;
            gate.StopAt(command.StopStep);
        }
        // from here on the rank is known: whatever fails is reported to the coordinator before this process exits
        // an elastic job waits for a coordinator that died: launch starts it again, and it carries on from its persisted state
        double? coordinatorGrace = config.Elastic.Enabled ? manifest.ConnectTimeoutSeconds : null;
        await using var link = new HeartbeatLink(client, manifest, progress.Beat, ct, OnStopCommand, coordinatorGrace);
        // a signal to this worker stops the whole job: the coordinator agrees the step with every rank
        _ = stop.Requested.ContinueWith(async code =>
        {
            try { await client.RequestStopAsync(new StopJobRequest { Rank = rank, ExitCode = code.Result, From = $"rank {rank}'s signal" }, deadline: DateTime.UtcNow.AddSeconds(10)); }
            catch (RpcException e) { WorkerDiagnostics.StopNotDelivered(log, manifest.Job, rank, e.Status.Detail); }
        }, link.Stopping, TaskContinuationOptions.None, TaskScheduler.Default);
        ICommunicator? comm = null;
        Trainer? trainer = null;
        try
        {
            var plan = DataParallelPlan.For(config, reply.WorldSize);
            var data = CheckedAssignment(config, plan, rank, reply);
            if (reply.CudaDevice >= 0) config = config with { Train = config.Train with { Device = $"cuda:{reply.CudaDevice}" } };
            else TorchSharp.torch.set_num_threads(Math.Max(1, Environment.ProcessorCount / node.Slots));   // CPU slots share the cores; oversubscribed libtorch threads spin
            // a later generation restores the job's last committed checkpoint (none yet: the config's own start)
            if (reply.RestoreFrom.Length > 0) config = config with { Checkpoint = config.Checkpoint with { Resume = reply.RestoreFrom } };

            WorkerDiagnostics.Joined(log, manifest.Job, rank, reply.WorldSize, reply.Backend, config.Train.Device, reply.RunId);
            comm = await ConnectAsync(client, manifest, token, reply, link.Stopping);
            link.Guard(comm);
            var commit = new CoordinatorCommit(client, rank, reply.Generation, coordinatorGrace);
            var snapshotPlan = snapshots is null ? null : new SnapshotPlan(snapshots, config.Elastic.SnapshotInterval, commit, Restore(reply.Snapshot));
            trainer = new Trainer(config, comm, data, reply.RunId, commit, manifest.Job, gate, reply.Generation, snapshotPlan);
            progress.Cursors = () => trainer.DataCursors;
            var telemetry = TrainingTelemetry.For(trainer, config, rank, reply.WorldSize, span?.Context ?? default);
            progress.Compute = telemetry.TakeCompute;
            var observer = new Observers(progress, telemetry, new SnapshotLog(log, manifest.Job, rank), observerForRank(rank));
            var result = await Task.Run(() => trainer.Run(observer, link.Stopping), CancellationToken.None);
            // finish first, then end the stream: a stream that ends before Finish means a lost worker
            await link.EndBeatsAsync();
            await client.FinishAsync(new FinishRequest { Rank = rank, Step = progress.Step, Stopped = result.Stopped is not null, Generation = reply.Generation },
                CoordinatorCommit.Options(coordinatorGrace, ct));
            await link.CompleteAsync();
            WorkerDiagnostics.Finished(log, manifest.Job, rank, progress.Step);
            if (result.Stopped is null) return (0, null);
            stop.Outcome = result.Stopped;
            return (stopExitCode, null);
        }
        catch (Exception) when (link.Restart is { } restart)
        {
            WorkerDiagnostics.Regenerating(log, manifest.Job, rank, reply.Generation, progress.Step, restart.Generation, restart.Cause);
            return (0, restart.Generation);
        }
        catch (Exception e) when (link.StopReason is { } reason)
        {
            throw Stopped(log, span, manifest.Job, rank, progress.Step, reason, e);
        }
        catch (Exception e)
        {
            // reported before the communicator closes: the coordinator hears this rank's own error before its
            // peers' broken collectives, and names it as the cause
            var report = FailureReport.For(rank, progress.Step, e, interrupted: ct.IsCancellationRequested);
            report.Generation = reply.Generation;
            try { await client.FinishAsync(report, deadline: DateTime.UtcNow.AddSeconds(5)); }
            catch (RpcException) { }
            // a broken collective is most likely a peer's failure: the coordinator names the cause in its STOP, or opens a new generation
            if (report.Failure == FinishRequest.Types.Failure.Collective && await link.WaitForStopAsync(CauseWait) is { } reason)
            {
                if (link.Restart is { } restart)
                {
                    WorkerDiagnostics.Regenerating(log, manifest.Job, rank, reply.Generation, progress.Step, restart.Generation, restart.Cause);
                    return (0, restart.Generation);
                }
                throw Stopped(log, span, manifest.Job, rank, progress.Step, reason, e);
            }
            WorkerDiagnostics.Stopped(log, manifest.Job, rank, progress.Step, report.Message);
            span?.SetStatus(ActivityStatusCode.Error, report.Message);
            throw;
        }
        finally
        {
            trainer?.Dispose();
            comm?.Dispose();
        }
    }

    /// <summary>The coordinator's choice of in-memory snapshot for this generation (null: none to restore).</summary>
    static SnapshotRestore? Restore(Protocol.V1.SnapshotRestore? snapshot) => snapshot is null ? null : new SnapshotRestore(
        snapshot.Generation, snapshot.Step, snapshot.WorldSize, [.. snapshot.Sources],
        JsonSerializer.Deserialize<Dictionary<int, string>>(snapshot.CursorsJson)!.ToDictionary(c => c.Key, c => DataCursor.FromJson(c.Value)),
        (snapshot.AdamSteps, snapshot.FirstNonFinite));

    /// <summary>Each snapshot this rank takes or restores, in its log.</summary>
    sealed class SnapshotLog(ILogger log, string job, int rank) : ITrainingObserver
    {
        public void OnSnapshot(SnapshotReport report)
        {
            if (report.VoteError is { } error) WorkerDiagnostics.SnapshotNotCommitted(log, job, rank, error);
            else WorkerDiagnostics.SnapshotTaken(log, job, rank, report.Step, report.Bytes / 1e6, report.StallSeconds);
        }

        public void OnSnapshotRestored(SnapshotRestore snapshot) =>
            WorkerDiagnostics.SnapshotRestored(log, job, rank, snapshot.Step, snapshot.Generation, snapshot.WorldSize);
    }

    /// <summary>How long a rank whose collective broke waits for the coordinator to name the cause (it waits 750 ms for it).</summary>
    static readonly TimeSpan CauseWait = TimeSpan.FromSeconds(5);

    static WorkerException Stopped(ILogger log, Activity? span, string job, int rank, int step, string reason, Exception e)
    {
        WorkerDiagnostics.Stopped(log, job, rank, step, reason);
        span?.SetStatus(ActivityStatusCode.Error, reason);
        return new WorkerException($"rank {rank}: {reason}", e);
    }

    /// <summary>The coordinator's shards must be the ones this worker computes from its own copy of the data.</summary>
    static DataAssignment CheckedAssignment(TrainConfig config, DataParallelPlan plan, int rank, RegisterReply reply)
    {
        var local = DataAssignment.For(config, plan, rank);
        var remote = reply.Shards.Select(s => (s.Index, new WindowRange(s.FirstWindow, s.Windows))).ToList();
        if (!local.Shards.SequenceEqual(remote))
            throw new WorkerException($"rank {rank}: the coordinator assigned shards [{Describe(remote)}] of {reply.DataShards} but this worker's data ({config.Data.Train}) " +
                $"and data.shards ({plan.Shards}) give [{Describe(local.Shards)}]; every node must see the same data set and config");
        return local;
    }

    static string Describe(IEnumerable<(int Shard, WindowRange Range)> shards) =>
        string.Join(", ", shards.Select(s => $"{s.Shard}: windows {s.Range.First}-{s.Range.End - 1}"));

    /// <param name="token">the job token: ring ranks prove it to each other when they connect</param>
    static async Task<ICommunicator> ConnectAsync(Protocol.V1.Coordinator.CoordinatorClient client, ClusterManifest manifest, string token, RegisterReply reply, CancellationToken ct)
    {
        if (reply.Backend == "nccl")
        {
            var id = reply.Rank == 0 ? NcclCommunicator.CreateUniqueId() : [];
            var rendezvous = await client.RendezvousAsync(new RendezvousRequest { Rank = reply.Rank, NcclUniqueId = ByteString.CopyFrom(id), Generation = reply.Generation },
                deadline: DateTime.UtcNow.AddSeconds(manifest.RendezvousTimeoutSeconds), cancellationToken: ct);
            return new NcclCommunicator(reply.Rank, reply.WorldSize, rendezvous.NcclUniqueId.ToByteArray(), reply.CudaDevice);
        }
        var peers = reply.RingEndpoints.Select(ParseEndpoint).ToList();
        return await Task.Run(() => RingCommunicator.Connect(reply.Rank, reply.WorldSize, peers, manifest.Job, token, TimeSpan.FromSeconds(manifest.RendezvousTimeoutSeconds), ct), ct);
    }

    static IPEndPoint ParseEndpoint(string hostPort)
    {
        int colon = hostPort.LastIndexOf(':');
        var host = hostPort[..colon];
        var address = IPAddress.TryParse(host, out var ip) ? ip : Dns.GetHostAddresses(host).First(a => a.AddressFamily == AddressFamily.InterNetwork);
        return new IPEndPoint(address, int.Parse(hostPort[(colon + 1)..]));
    }

    /// <summary>A free port on this node for the ring listener (held until registration, then released for the communicator).</summary>
    static (TcpListener, string) ReserveRingPort(string host)
    {
        var address = IPAddress.TryParse(host, out var ip) ? ip : host == "localhost" ? IPAddress.Loopback : IPAddress.Any;
        var listener = new TcpListener(address, 0);
        listener.Start();
        return (listener, $"{host}:{((IPEndPoint)listener.LocalEndpoint).Port}");
    }

    static WorkerException Explain(RpcException e, ClusterManifest m) => ClientTls.Refusal(e) is { } refused ? new(refused.Message, e) : e.StatusCode switch
    {
        StatusCode.Unavailable => Unreachable(m, e),
        StatusCode.PermissionDenied => new WorkerException(
            $"the coordinator at {m.CoordinatorHost}:{m.CoordinatorPort} refused this worker ({e.Status.Detail}); it may belong to another job using port {m.CoordinatorPort}: " +
            $"stop that job or give this one another coordinator.port in {m.Source} (on one node, coordinator.port: auto picks a free one); if it is this job's coordinator, " +
            $"every process needs the same token ({(m.TokenSource.StartsWith("value:") ? "the manifest's value:" : m.TokenSource)})", e),   // never print a literal secret
        StatusCode.DeadlineExceeded => new WorkerException($"not every worker registered within heartbeat.rendezvous_timeout_s ({m.RendezvousTimeoutSeconds} s); the job needs {m.WorldSize} workers", e),
        _ => new WorkerException($"the coordinator refused this worker: {e.Status.Detail}", e),
    };

    /// <summary>The first call failed: nothing answered in time, this worker refused the coordinator's certificate, or the connection broke (TLS on one side only, or a client certificate the coordinator refused).</summary>
    static WorkerException FirstContactFailed(ClusterManifest m, RpcException e)
    {
        if (ClientTls.Refusal(e) is { } refused) return new(refused.Message, e);
        if (e.StatusCode is StatusCode.DeadlineExceeded) return Unreachable(m, e);
        string hint = m.Tls switch
        {
            null => "if the coordinator serves TLS, this node's manifest needs the job's tls section",
            { Mutual: false } => "if the coordinator requires client certificates (mutual TLS), this node's manifest needs tls.client_cert and tls.client_key, signed by the job's CA",
            _ => "under mutual TLS the coordinator closes the connection of a worker whose certificate it does not trust (its log says why): tls.client_cert must be signed by the CA in the coordinator's tls.ca",
        };
        return new($"the connection to the coordinator at {m.CoordinatorAddress} failed: {hint} ({e.StatusCode}: {e.Status.Detail})", e);
    }

    static WorkerException Unreachable(ClusterManifest m, RpcException e) => ClientTls.Refusal(e) is { } refused
        ? new(refused.Message, e)
        : new($"the coordinator at {m.CoordinatorAddress} is unreachable after waiting {m.ConnectTimeoutSeconds} s (heartbeat.connect_timeout_s; {e.Status.Detail}); is it running? `disttrain launch` starts it on node {m.CoordinatorNode} ({m.Nodes[m.CoordinatorNode].Host})", e);

    /// <summary>What the heartbeat reports: the latest step, tokens, loss and compute time per step.</summary>
    sealed class Progress(int rank, int generation) : ITrainingObserver
    {
        volatile StepReport? _last;
        public int Step;
        public volatile int StopFinishedSteps = -1;   // >= 0: acknowledging a graceful stop
        public Func<IReadOnlyList<DataCursor>> Cursors { get; set; } = () => [];
        public Func<StepCompute?> Compute { get; set; } = () => null;
        public void OnStep(int step) => Step = step + 1;
        public void OnReport(StepReport report) => _last = report;
        public HeartbeatRequest Beat()
        {
            var compute = Compute();
            return new()
            {
                Rank = rank, Step = Step, Tokens = _last?.Tokens ?? 0, Loss = _last?.Loss ?? double.NaN,
                DataCursor = "[" + string.Join(",", Cursors().Select(c => c.ToJson())) + "]",
                ComputeSeconds = compute?.ComputeSeconds ?? 0, StepSeconds = compute?.StepSeconds ?? 0,
                StopAcknowledged = StopFinishedSteps >= 0, StopFinishedSteps = Math.Max(0, StopFinishedSteps), Generation = generation,
            };
        }
    }
}
