using System.Diagnostics;
using DistTrain.Cli.Terminal;
using DistTrain.Training.Stopping;
using DistTrain.Worker;
using DistTrain.Training.Cluster;
using DistTrain.Training.Config;

namespace DistTrain.Cli.Commands;

/// <summary>
/// Starts this node's processes (the coordinator on its node, one worker per slot) as children of
/// the same executable, forwards their output with a prefix, and exits non-zero if any fails, with a
/// last line that names the cause. SIGINT / SIGTERM ask the coordinator to stop the whole job gracefully (every
/// rank saves the same step); launch waits for its children and exits with the stop's code; a second signal kills them.
/// </summary>
static class Launcher
{
    static readonly TimeSpan FailureGrace = TimeSpan.FromSeconds(10);

    /// <param name="traceParent">the job span's W3C traceparent, passed on to every child (empty: none)</param>
    /// <param name="port">the port launch picked for coordinator.port: auto, passed to every child (--port); null: the manifest's</param>
    /// <param name="elastic">the job's recovery policy: launch starts a failed worker again (elastic.max_restarts times per slot)</param>
    public static async Task<int> RunAsync(ClusterManifest m, string manifestPath, string configPath, string[] overrides, int nodeRank, string traceParent, CancellationToken ct,
        int? port = null, ElasticOptions? elastic = null)
    {
        if (nodeRank < 0 || nodeRank >= m.Nodes.Count)
            throw new ConfigException($"{m.Source}: --node-rank {nodeRank} is not one of the {m.Nodes.Count} nodes (0-based)");
        var node = m.Nodes[nodeRank];
        elastic ??= new ElasticOptions();
        int present = LocalGpuCount();
        if (node.Gpus.Count > 0 && node.Gpus.Max() >= present)
            throw new ConfigException($"{m.Source}: nodes[{nodeRank}].gpus: [{string.Join(", ", node.Gpus)}] listed, this host has {present} GPU(s)");

        string[] common = ["--manifest", manifestPath, "--config", configPath, .. overrides.SelectMany(o => new[] { "--set", o }), .. port is { } p ? new[] { "--port", $"{p}" } : []];
        var children = new List<LaunchedChild>();
        // the coordinator, and each slot's newest process
        static List<LaunchedChild> Current(List<LaunchedChild> all) => all.GroupBy(c => c.Slot).Select(g => g.Last()).ToList();
        using var signals = new StopSignals(new StopRequest(), "stopping the job: every rank finishes its step and saves a checkpoint",
            atOnce: () => { lock (children) foreach (var c in children) TryKill(c.Process); });
        _ = signals.Stop.Requested.ContinueWith(async code =>
        {
            if (await JobStop.RequestAsync(m, code.Result, $"launch on node {nodeRank}") is { } refused)
                Console.Error.WriteLine($"[launch] cannot stop the job gracefully: {refused}; send the signal again to end every process at once");
        }, TaskScheduler.Default);
        // an elastic job: a worker that fails is started again on its slot (at most elastic.max_restarts times) while the job
        // goes on; the coordinator opens the next generation around it
        var restarts = new int[node.Slots];
        int coordinatorRestarts = 0;
        string[] WorkerArgs(int slot) => ["worker", .. common, "--node-rank", $"{nodeRank}", "--local-slot", $"{slot}"];
        string NameOf(int slot) => $"rank {m.RankOf(nodeRank, slot)}";   // the slot's first rank: ranks are fixed by the manifest until a recovery
        lock (children)
        {
            if (nodeRank == m.CoordinatorNode) children.Add(Start("coordinator", ["coordinator", .. common], traceParent, m.Job));
            for (int slot = 0; slot < node.Slots; slot++) children.Add(Start(NameOf(slot), WorkerArgs(slot), traceParent, m.Job, slot));
        }
        using var watch = elastic.Enabled ? new RecoveryWatch(m, node.Host, () => { lock (children) return children.Where(c => c.Slot >= 0).Select(c => c.Process).ToList(); }) : null;

        using var stop = ct.Register(() => { lock (children) foreach (var c in children) TryKill(c.Process); });
        // once one child has failed for good, the rest get a grace period to stop on their own (the coordinator
        // tells them why); a frozen or stuck one is killed after it, so launch never hangs
        while (true)
        {
            List<LaunchedChild> current;
            lock (children) current = Current(children);
            // one snapshot of what is still running: a second look could find it empty (the last child exiting in between)
            var pending = current.Select(c => c.WaitAsync()).Where(e => !e.IsCompleted).ToList();
            if (pending.Count == 0) break;
            await Task.WhenAny(pending);
            var coordinator = current.FirstOrDefault(c => c.Slot < 0);
            // a coordinator that crashed (a signal, not the job's own end) starts again and carries on from its persisted state
            if (coordinator is { Process.HasExited: true } && coordinator.Process.ExitCode >= 128 && !StopRequest.IsStopExitCode(coordinator.Process.ExitCode)
                && elastic.Enabled && coordinatorRestarts < elastic.MaxRestarts && !(watch?.JobOver ?? false))
            {
                coordinatorRestarts++;
                Console.Error.WriteLine($"[launch] coordinator exited with code {coordinator.Process.ExitCode}; starting it again (restart {coordinatorRestarts} of {elastic.MaxRestarts}): it carries on from its saved state");
                lock (children) children.Add(Start("coordinator", ["coordinator", .. common, "--carry-on"], traceParent, m.Job, -1, coordinatorRestarts));
                lock (children) current = Current(children);
                coordinator = current.First(c => c.Slot < 0);
            }
            bool jobOver = coordinator is { Process.HasExited: true } || watch?.JobOver == true;
            foreach (var c in current.Where(c => c.Slot >= 0 && c.Failed && !jobOver && elastic.Enabled && restarts[c.Slot] < elastic.MaxRestarts))
            {
                restarts[c.Slot]++;
                Console.Error.WriteLine($"[launch] {c.Name} (node {nodeRank} slot {c.Slot}) exited with code {c.Process.ExitCode}; starting it again (restart {restarts[c.Slot]} of {elastic.MaxRestarts} on this slot)");
                lock (children) children.Add(Start(c.Name, WorkerArgs(c.Slot), traceParent, m.Job, c.Slot, restarts[c.Slot]));
            }
            lock (children) current = Current(children);
            if (current.Any(c => c.Failed) || (elastic.Enabled && coordinator is { Process.HasExited: true } && current.Any(c => !c.Process.HasExited)))
            {
                await Task.WhenAny(Task.WhenAll(current.Select(c => c.WaitAsync())), Task.Delay(FailureGrace));
                foreach (var c in current.Where(c => !c.Process.HasExited))
                {
                    Console.Error.WriteLine(c.Incarnation > 0 && coordinator is { Failed: false }
                        ? $"[launch] {c.Name} was started again but the job ended without it; stopping it"
                        : $"[launch] {c.Name} still running {FailureGrace.TotalSeconds:F0} s after the job failed; killing it");
                    if (c.Incarnation > 0 && coordinator is { Failed: false }) c.Superfluous = true;
                    TryKill(c.Process);
                }
                await Task.WhenAll(current.Select(c => c.WaitAsync()));
            }
        }
        // a slot's outcome is its last process's; the ones before it were replaced
        children = Current(children).Where(c => !c.Superfluous).ToList();
        var failed = children.Where(c => c.Process.ExitCode != 0 && !StopRequest.IsStopExitCode(c.Process.ExitCode)).ToList();
        if (failed.Count == 0)
        {
            var stopCode = children.Select(c => c.Process.ExitCode).FirstOrDefault(StopRequest.IsStopExitCode);
            if (stopCode == 0) return 0;
            // rank 0's last line says where the job stopped; launch repeats it with its own resume command
            Console.WriteLine(children.FirstOrDefault(c => c.Name == "rank 0")?.Stopped is { } s
                ? ResumeCommand.StoppedLine(s.Step, s.Checkpoint)
                : "stopped; rank 0 runs on another node: its line says where the job stopped and how to resume");
            return stopCode;
        }
        foreach (var c in failed) Console.Error.WriteLine($"[launch] {c.Name} exited with code {c.Process.ExitCode}");
        // the last line names the cause: the coordinator's reason, else what the first process to fail said
        var cause = children.FirstOrDefault(c => c.Name == "coordinator")?.Cause
            ?? failed.OrderBy(c => c.ExitedAt).Select(c => c.Cause).FirstOrDefault(c => c is not null)
            ?? $"{string.Join(", ", failed.Select(c => c.Name))} exited non-zero; their lines above say why";
        Console.Error.WriteLine($"[launch] job '{m.Job}' failed: {cause}");
        return 1;
    }

    /// <param name="slot">the worker's slot on this node; -1: the coordinator</param>
    /// <param name="incarnation">0 for the first process of a slot, then each restart's number</param>
    static LaunchedChild Start(string name, string[] args, string traceParent, string job, int slot = -1, int incarnation = 0)
    {
        // the same program: `dotnet disttrain.dll ...` or the published `disttrain ...`
        var self = Environment.ProcessPath!;
        var start = new ProcessStartInfo(self) { RedirectStandardOutput = true, RedirectStandardError = true };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") start.ArgumentList.Add(Environment.GetCommandLineArgs()[0]);
        foreach (var a in args) start.ArgumentList.Add(a);
        start.Environment["NO_COLOR"] = "1";
        if (traceParent.Length > 0) start.Environment["TRACEPARENT"] = traceParent;
        return LaunchedChild.Start(name, start, job, slot, incarnation);
    }

    static void TryKill(Process p)
    {
        try { if (!p.HasExited) p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
    }

    /// <summary>NVIDIA GPUs the driver lists on this host (0 without one).</summary>
    static int LocalGpuCount() =>
        Directory.Exists("/proc/driver/nvidia/gpus") ? Directory.GetDirectories("/proc/driver/nvidia/gpus").Length : 0;
}
