using System.CommandLine;
using DistTrain.Cli.Terminal;
using DistTrain.Coordinator;
using DistTrain.Telemetry;
using DistTrain.Training.Cluster;
using DistTrain.Training;
using DistTrain.Training.Config;
using DistTrain.Training.Stopping;
using DistTrain.Worker;
using Spectre.Console;

namespace DistTrain.Cli.Commands;

/// <summary>disttrain coordinator | worker | launch | status: a job across processes and nodes.</summary>
static class ClusterCommands
{
    static Option<string> Manifest() => new("--manifest", "-m") { Description = "cluster manifest (YAML), for example cluster/local-cpu.yaml", Required = true };
    static Option<int?> Port() => new("--port") { Description = "the coordinator's port, instead of the manifest's coordinator.port (launch passes the one it picked for port: auto)" };
    static Option<bool> DryRunOption() => new("--dry-run") { Description = "check the manifest and config, print the resolved config, parameters, tokens per step, the data and a memory estimate; start nothing" };

    /// <summary>The manifest, with --port applied; coordinator.port: auto needs --port here (only launch picks one).</summary>
    static ClusterManifest LoadManifest(ParseResult parse, Option<string> manifest, Option<int?> port)
    {
        var m = ManifestLoader.Load(parse.GetValue(manifest)!);
        if (parse.GetValue(port) is { } p)
            return p is > 0 and < 65536 ? m.WithPort(p) : throw new ConfigException($"--port {p}: not a TCP port; give a number in 1..65535");
        if (m.PortIsAuto)
            throw new ConfigException($"{m.Source}: coordinator.port: auto is picked by `disttrain launch`, which passes it to the processes it starts; " +
                "a coordinator or worker started on its own needs the number: pass the same --port N to each, or set coordinator.port");
        return m;
    }

    static Option<int> NodeRank() => new("--node-rank") { Description = "this node's index in the manifest's nodes", DefaultValueFactory = _ => 0 };

    public static Command Coordinator()
    {
        var (manifest, config, set, port) = (Manifest(), CommonOptions.Config(), CommonOptions.Set(), Port());
        var carryOn = new Option<bool>("--carry-on")
        {
            Description = "an elastic job: carry on from the state the job's previous coordinator left in train.run_dir (coordinator-JOB.json), " +
                          "the workers reconnecting; launch passes it when it starts a coordinator that died again",
        };
        var command = new Command("coordinator", "run a job's control plane: rendezvous, ranks, data shards, heartbeats") { manifest, config, set, port, carryOn };
        command.SetAction(async (parse, ct) =>
        {
            var m = LoadManifest(parse, manifest, port);
            var c = TrainConfigLoader.Load(parse.GetValue(config)!, parse.GetValue(set));
            using var telemetry = CliTelemetry.Start("coordinator", new() { ["disttrain.job"] = m.Job });
            using var signals = new StopSignals(new StopRequest(), "stopping the job: every rank finishes its step and saves a checkpoint");
            return await CoordinatorServer.RunAsync(m, c, line => Console.WriteLine(line), telemetry.Logs, ct, signals.Stop, parse.GetValue(carryOn));
        });
        return command;
    }

    public static Command Worker()
    {
        var (manifest, config, set, node, resume) = (Manifest(), CommonOptions.Config(), CommonOptions.Set(), NodeRank(), CommonOptions.Resume());
        var slot = new Option<int>("--local-slot") { Description = "which of the node's GPUs / CPU slots this worker uses", DefaultValueFactory = _ => 0 };
        var port = Port();
        var command = new Command("worker", "join a job as one worker (for schedulers that start processes themselves)") { manifest, config, set, node, slot, port };
        resume.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            var m = LoadManifest(parse, manifest, port);
            TrainConfig c;
            try { c = TrainConfigLoader.Load(parse.GetValue(config)!, CommonOptions.Overrides(parse, set, resume)); }
            catch (Exception e)
            {
                // no rank yet, but the coordinator can stop the job with this error instead of waiting for this worker
                await UnregisteredWorker.ReportAsync(m, parse.GetValue(node), parse.GetValue(slot), e);
                throw;
            }
            using var telemetry = CliTelemetry.Start("worker", new()
            {
                ["disttrain.job"] = m.Job, ["disttrain.node_rank"] = parse.GetValue(node), ["disttrain.local_slot"] = parse.GetValue(slot),
            });
            using var signals = new StopSignals(new StopRequest(), "asking the coordinator to stop the job: every rank finishes its step and saves a checkpoint");
            // only rank 0 prints the job's lines
            int exit = await WorkerRunner.RunAsync(m, c, parse.GetValue(node), parse.GetValue(slot),
                rank => rank == 0 ? TrainingProgress.Lines() : null, telemetry.Logs, ct, signals.Stop);
            if (signals.Stop.Outcome is { } stopped) Console.WriteLine(ResumeCommand.StoppedLine(stopped.Step, stopped.Checkpoint));
            return exit;
        });
        return command;
    }

    public static Command Launch()
    {
        var (manifest, config, set, node, resume) = (Manifest(), CommonOptions.Config(), CommonOptions.Set(), NodeRank(), CommonOptions.Resume());
        var dryRun = DryRunOption();
        var command = new Command("launch", "start what this node runs: the coordinator (on its node) and one worker per GPU / CPU slot") { manifest, config, set, node, dryRun };
        resume.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            var path = parse.GetValue(manifest)!;
            var m = ManifestLoader.Load(path);
            var overrides = CommonOptions.Overrides(parse, set, resume);
            var c = TrainConfigLoader.Load(parse.GetValue(config)!, overrides);   // fail here, not in every child
            DataParallelPlan.For(c, m.WorldSize);                                // the world size must split the batch
            ElasticSizes.For(c, m.WorldSize);                                    // and every smaller one a recovery may leave
            ManifestLoader.ReadToken(m);
            int nodeRank = parse.GetValue(node);
            if (nodeRank < 0 || nodeRank >= m.Nodes.Count)
                throw new ConfigException($"{m.Source}: --node-rank {nodeRank} is not one of the {m.Nodes.Count} nodes (0-based)");
            TlsFiles.Check(m, coordinator: nodeRank == m.CoordinatorNode, worker: true);
            if (parse.GetValue(dryRun)) return DryRun.Print(c, m);
            // the run directories of this node's ranks go under train.run_dir: one line here instead of every child failing the same way
            // (checkpoint.dir, possibly shared by the nodes, is each rank's own check: the coordinator names the first that fails)
            WritableFolder.Ensure(Path.GetFullPath(c.Train.RunDir), "train.run_dir", c, m.RankOf(nodeRank, 0));
            int? picked = null;
            if (m.PortIsAuto)
            {
                picked = m.FreePort();
                m = m.WithPort(picked.Value);
                Console.WriteLine($"[launch] coordinator.port auto: port {picked}");
            }
            using var telemetry = CliTelemetry.Start("launch", new() { ["disttrain.job"] = m.Job, ["disttrain.node_rank"] = parse.GetValue(node) });
            // one job, one trace: the coordinator's node holds the job's span, and every process it starts joins it
            using var span = parse.GetValue(node) == m.CoordinatorNode ? CliTelemetry.JobSpan(m.Job, m.WorldSize) : null;
            int exit = await Launcher.RunAsync(m, path, parse.GetValue(config)!, overrides, parse.GetValue(node), TelemetrySession.TraceParent(span?.Context ?? default), ct, picked, c.Elastic);
            if (exit != 0) span?.SetStatus(System.Diagnostics.ActivityStatusCode.Error, "a process of the job failed");
            return exit;
        });
        return command;
    }

    public static Command Status()
    {
        var manifest = Manifest();
        var address = new Option<string?>("--coordinator") { Description = "coordinator address (default: the manifest's)" };
        var command = new Command("status", "show a running job's state and each rank's progress") { manifest, address };
        command.SetAction(async (parse, ct) =>
        {
            var m = ManifestLoader.Load(parse.GetValue(manifest)!);
            if (m.PortIsAuto && parse.GetValue(address) is null)
                throw new ConfigException($"{m.Source}: coordinator.port: auto, so the port is the one launch picked: pass --coordinator http://{m.CoordinatorHost}:PORT (launch prints '[launch] coordinator.port auto: port PORT')");
            var status = await JobProgress.QueryAsync(m, parse.GetValue(address), ct);
            AnsiConsole.MarkupLineInterpolated($"job [bold]{status.Job}[/]: {status.State} ({status.Registered}/{status.WorldSize} registered) {status.Reason}");
            var table = new Table().AddColumns("rank", "host", "step", "tokens", "loss", "last heartbeat", "compute/step", "lateness", "finished");
            foreach (var r in status.Ranks)
                table.AddRow(r.Rank.ToString(), r.Host, r.Step.ToString(), r.Tokens.ToString("N0"), r.Loss.ToString("F4"), $"{r.SecondsSinceHeartbeat:F1} s ago",
                    r.ComputeSeconds > 0 ? $"{r.ComputeSeconds:F3} s" : "-", r.ComputeSeconds > 0 ? $"{r.LatenessSeconds:+0.000;-0.000} s" + (r.Straggler ? " STRAGGLER" : "") : "-",
                    r.Finished ? "yes" : "no");
            AnsiConsole.Write(table);
            Console.WriteLine(status.CheckpointStep > 0 ? $"last checkpoint: step {status.CheckpointStep} at {status.CheckpointPath}" : "last checkpoint: none yet");
            if (status.CheckpointError.Length > 0) Console.WriteLine($"last failed save: {status.CheckpointError}");
            if (status.SnapshotStep > 0) Console.WriteLine($"last in-memory snapshot: step {status.SnapshotStep}");
            if (status.MaxRestarts > 0)
                Console.WriteLine($"generation {status.Generation}; {status.Recoveries!.Count} recover{(status.Recoveries.Count == 1 ? "y" : "ies")} (elastic.max_restarts {status.MaxRestarts})");
            foreach (var r in status.Recoveries ?? [])
                Console.WriteLine($"  generation {r.Generation}: {r.Cause}; " + (r.RestoredStep < 0 ? "gathering workers"
                    : $"{r.WorldSize} workers from the {(r.RestoredFrom is "snapshot" ? "in-memory snapshot" : r.RestoredFrom is "checkpoint" ? "checkpoint" : "start")} of step {r.RestoredStep} ({Math.Max(0, r.FailedAtStep - r.RestoredStep)} steps trained again)" +
                      (r.SecondsToFirstStep > 0 ? $", first step {r.SecondsToFirstStep:F1} s after the failure" : "")));
            return 0;
        });
        return command;
    }
}
