using System.Diagnostics;
using System.Globalization;
using System.Net;
using DistTrain.Protocol.V1;
using DistTrain.Telemetry;
using DistTrain.Training;
using DistTrain.Training.Cluster;
using DistTrain.Training.Config;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using DistTrain.Training.Stopping;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace DistTrain.Coordinator;

/// <summary>
/// Hosts the coordinator (Kestrel, HTTP/2, optional TLS) until the job finishes or fails.
/// Binds to the manifest's coordinator.bind address (loopback unless the manifest says otherwise).
/// </summary>
public static class CoordinatorServer
{
    /// <summary>
    /// Runs the job's control plane; returns 0 when every rank finished, 1 when the job failed, and the stop's exit code
    /// (130 SIGINT, 143 SIGTERM) when <paramref name="stop"/> or a worker asked for a graceful stop.
    /// </summary>
    /// <param name="logs">where the job's log lines go (stragglers, commits, failure); null: nowhere</param>
    /// <param name="stop">a signal to this process: the job stops gracefully (every rank saves the same step); null: none</param>
    /// <param name="carryOn">an elastic job: carry on from the state the job's previous coordinator persisted (<see cref="JobStateFile"/>)</param>
    public static async Task<int> RunAsync(ClusterManifest manifest, TrainConfig config, Action<string> log, ILoggerFactory? logs, CancellationToken ct,
        StopRequest? stop = null, bool carryOn = false)
    {
        DataParallelPlan.For(config, manifest.WorldSize);
        ElasticSizes.For(config, manifest.WorldSize);   // every world size a recovery may leave must split the batch: refused now, not after a loss
        var stateFile = JobStateFile.PathFor(config.Train.RunDir, manifest.Job);
        var persisted = carryOn && config.Elastic.Enabled ? JobStateFile.ReadUnfinished(stateFile) : null;
        if (carryOn && persisted is null)
            throw new ConfigException($"--carry-on: {stateFile} holds no running elastic job '{manifest.Job}' to carry on (elastic.max_restarts {config.Elastic.MaxRestarts}); start the job without it");
        // a resume continues the run directory of its checkpoint (every rank finds it in the manifest): name that one
        var runId = persisted?.RunId ?? RunDirectory.ResumedRunName(config) ?? $"{config.Train.Name}-{DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture)}";
        // under `disttrain launch` the job's span is the launcher's (TRACEPARENT); started alone, the coordinator's span is the job's
        var launched = TelemetrySession.ParseTraceParent(Environment.GetEnvironmentVariable("TRACEPARENT"));
        using var span = CoordinatorDiagnostics.Source.StartActivity(launched == default ? "job" : "coordinator", ActivityKind.Internal, launched);
        span?.SetTag("disttrain.job", manifest.Job).SetTag("disttrain.world_size", manifest.WorldSize).SetTag("disttrain.run", runId);
        var traceParent = TelemetrySession.TraceParent(launched != default ? launched : span?.Context ?? default);
        var job = new JobState(manifest, (rank, world, worker) => Assignment(manifest, config, world, rank, worker, runId, traceParent), config.Telemetry,
            logs?.CreateLogger(CoordinatorDiagnostics.Name), span, config.Elastic);
        if (persisted is not null) job.Restore(persisted);
        if (config.Elastic.Enabled) job.PersistTo(runId, state => JobStateFile.Write(stateFile, state));
        var token = new JobToken(ManifestLoader.ReadToken(manifest));

        var https = manifest.Tls is null ? null : ServerTls.Options(manifest, log);   // a bad file fails here, before the port opens

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Warning)
            .AddFilter("Microsoft.Extensions.Hosting", LogLevel.None);   // a failed start is reported below, in one line
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Parse(manifest.BindAddress == "localhost" ? "127.0.0.1" : manifest.BindAddress), manifest.CoordinatorPort, listen =>
        {
            listen.Protocols = HttpProtocols.Http2;
            if (https is not null) listen.UseHttps(https);
        }));
        // signals are the command's (a graceful stop of the whole job), not the host's: no ConsoleLifetime
        builder.Services.AddSingleton<IHostLifetime, SignalFreeLifetime>();
        builder.Services.AddSingleton(job);
        builder.Services.AddSingleton(token);
        builder.Services.AddGrpc(o => o.Interceptors.Add<TokenInterceptor>());
        var app = builder.Build();
        app.MapGrpcService<CoordinatorService>();
        try { await app.StartAsync(ct); }
        catch (IOException e) when (e.InnerException is Microsoft.AspNetCore.Connections.AddressInUseException)
        {
            await app.DisposeAsync();
            throw new ConfigException(
                $"coordinator.port: {manifest.BindAddress}:{manifest.CoordinatorPort} is already in use (another job's coordinator, or any other program); " +
                $"set coordinator.port in the manifest to a free port such as {FreePort()}, or stop what holds it (ss -ltnp 'sport = :{manifest.CoordinatorPort}')");
        }
        log($"coordinator for job '{manifest.Job}' on {manifest.BindAddress}:{manifest.CoordinatorPort}: waiting for {manifest.WorldSize} workers; run {runId}");

        stop?.Requested.ContinueWith(code => job.RequestStop(new StopJobRequest { Rank = -1, ExitCode = code.Result, From = "the coordinator's signal" }), TaskScheduler.Default);
        using var watchdog = new PeriodicTimer(TimeSpan.FromMilliseconds(250));
        var watching = Task.Run(async () =>
        {
            while (await watchdog.WaitForNextTickAsync(ct) && !job.Stopped.IsCompleted) job.CheckHeartbeats(DateTime.UtcNow);
        }, ct);
        try { await job.Stopped.WaitAsync(ct); }
        catch (OperationCanceledException) { job.Fail("the coordinator was interrupted"); }
        await Task.Delay(TimeSpan.FromSeconds(1), CancellationToken.None);   // let STOP reach every heartbeat stream
        await app.StopAsync(CancellationToken.None);
        if (job.Failed)
        {
            span?.SetStatus(ActivityStatusCode.Error, job.Reason);
            log($"job '{manifest.Job}' failed: {job.Reason}");
            return job.StopExitCode != 0 ? job.StopExitCode : 1;
        }
        if (job.StoppedAt is var (step, checkpoint))
        {
            if (stop is not null) stop.Outcome = new StopOutcome(step, checkpoint.Length > 0 ? checkpoint : null);
            log($"job '{manifest.Job}' stopped at step {step}; checkpoint {(checkpoint.Length > 0 ? checkpoint : "none")}; resume with: the same command, every worker given --resume {(checkpoint.Length > 0 ? checkpoint : "latest")}");
            return job.StopExitCode;
        }
        log($"job '{manifest.Job}' finished");
        return 0;
    }

    /// <summary>Rank <paramref name="rank"/> of a generation of <paramref name="worldSize"/> workers, run by <paramref name="worker"/> (its node and slot give the GPU).</summary>
    static RegisterReply Assignment(ClusterManifest manifest, TrainConfig config, int worldSize, int rank, RegisterRequest worker, string runId, string traceParent)
    {
        var plan = DataParallelPlan.For(config, worldSize);
        var data = DataAssignment.For(config, plan, rank);
        var node = manifest.Nodes[worker.NodeRank];
        var reply = new RegisterReply
        {
            Rank = rank, WorldSize = worldSize, Backend = manifest.Backend,
            CudaDevice = node.Gpus.Count > 0 ? node.Gpus[worker.LocalSlot] : -1,
            DataShards = plan.Shards, WindowsPerShard = data.Shards[0].Range.Count, RunId = runId, TraceParent = traceParent,
        };
        reply.Shards.AddRange(data.Shards.Select(s => new DataShard { Index = s.Shard, FirstWindow = s.Range.First, Windows = s.Range.Count }));
        return reply;
    }

    /// <summary>A port the system has free now (a suggestion: another program may take it before the job does).</summary>
    static int FreePort()
    {
        using var probe = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }
}

