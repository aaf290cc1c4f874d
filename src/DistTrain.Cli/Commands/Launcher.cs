using System.Diagnostics;
using System.Text.RegularExpressions;
using DistTrain.Cli.Terminal;
using DistTrain.Training.Stopping;
using DistTrain.Worker;
using DistTrain.Training.Cluster;
using DistTrain.Training.Config;

namespace DistTrain.Cli.Commands;

/// <summary>
/// Starts this node's processes (the coordinator on its node, one worker per slot) as children of
/// the same executable, forwards their output with a prefix, and exits non-zero if any fails.
/// SIGINT / SIGTERM ask the coordinator to stop the whole job gracefully (every rank saves the same step), then
/// launch waits for its children and exits with the stop's code; a second signal kills them at once.
/// </summary>
static partial class Launcher
{
    static readonly TimeSpan FailureGrace = TimeSpan.FromSeconds(10);

    /// <param name="traceParent">the job span's W3C traceparent, passed on to every child (empty: none)</param>
    public static async Task<int> RunAsync(ClusterManifest m, string manifestPath, string configPath, string[] overrides, int nodeRank, string traceParent, CancellationToken ct)
    {
        if (nodeRank < 0 || nodeRank >= m.Nodes.Count)
            throw new ConfigException($"{m.Source}: --node-rank {nodeRank} is not one of the {m.Nodes.Count} nodes (0-based)");
        var node = m.Nodes[nodeRank];
        int present = LocalGpuCount();
        if (node.Gpus.Count > 0 && node.Gpus.Max() >= present)
            throw new ConfigException($"{m.Source}: nodes[{nodeRank}].gpus: [{string.Join(", ", node.Gpus)}] listed, this host has {present} GPU(s)");

        string[] common = ["--manifest", manifestPath, "--config", configPath, .. overrides.SelectMany(o => new[] { "--set", o })];
        var children = new List<(string Name, Process Process)>();
        using var signals = new StopSignals(new StopRequest(), "stopping the job: every rank finishes its step and saves a checkpoint",
            atOnce: () => { lock (children) foreach (var (_, p) in children) TryKill(p); });
        _ = signals.Stop.Requested.ContinueWith(async code =>
        {
            if (await JobStop.RequestAsync(m, code.Result, $"launch on node {nodeRank}") is { } refused)
                Console.Error.WriteLine($"[launch] cannot stop the job gracefully: {refused}; send the signal again to end every process at once");
        }, TaskScheduler.Default);
        StopOutcome? stopped = null;
        void Watch(string name, string line)
        {
            // rank 0's last line says where the job stopped; launch repeats it with its own resume command
            if (name == "rank 0" && StoppedLine().Match(line) is { Success: true } match)
                stopped = new StopOutcome(int.Parse(match.Groups[1].Value), match.Groups[2].Value);
        }
        lock (children)
        {
            if (nodeRank == m.CoordinatorNode) children.Add(("coordinator", Start("coordinator", ["coordinator", .. common], traceParent, Watch)));
            for (int slot = 0; slot < node.Slots; slot++)
            {
                var name = $"rank {m.RankOf(nodeRank, slot)}";   // ranks are fixed by the manifest: node order, then slot
                children.Add((name, Start(name, ["worker", .. common, "--node-rank", $"{nodeRank}", "--local-slot", $"{slot}"], traceParent, Watch)));
            }
        }

        using var stop = ct.Register(() => { foreach (var (_, p) in children) TryKill(p); });
        var exits = children.Select(c => c.Process.WaitForExitAsync(CancellationToken.None)).ToList();
        // once one child has failed, the rest get a grace period to stop on their own (the coordinator
        // tells them why); a frozen or stuck one is killed after it, so launch never hangs
        while (exits.Any(e => !e.IsCompleted))
        {
            await Task.WhenAny(exits.Where(e => !e.IsCompleted));
            // a graceful stop's exit code is not a failure: the others are saving the same step
            if (children.Any(c => c.Process.HasExited && c.Process.ExitCode != 0 && !StopRequest.IsStopExitCode(c.Process.ExitCode)))
            {
                await Task.WhenAny(Task.WhenAll(exits), Task.Delay(FailureGrace));
                foreach (var (name, p) in children.Where(c => !c.Process.HasExited))
                {
                    Console.Error.WriteLine($"[launch] {name} still running {FailureGrace.TotalSeconds:F0} s after the job failed; killing it");
                    TryKill(p);
                }
                await Task.WhenAll(exits);
            }
        }
        var failed = children.Where(c => c.Process.ExitCode != 0 && !StopRequest.IsStopExitCode(c.Process.ExitCode)).ToList();
        foreach (var (name, p) in failed) Console.Error.WriteLine($"[launch] {name} exited with code {p.ExitCode}");
        if (failed.Count > 0) return 1;
        var stopCode = children.Select(c => c.Process.ExitCode).FirstOrDefault(StopRequest.IsStopExitCode);
        if (stopCode == 0) return 0;
        Console.WriteLine(stopped is { } s ? ResumeCommand.StoppedLine(s.Step, s.Checkpoint) : "stopped; rank 0 runs on another node: its line says where and how to resume");
        return stopCode;
    }

    [GeneratedRegex(@"^stopped at step (\d+); checkpoint (\S+);")]
    private static partial Regex StoppedLine();

    static Process Start(string name, string[] args, string traceParent, Action<string, string> watch)
    {
        // the same program: `dotnet disttrain.dll ...` or the published `disttrain ...`
        var self = Environment.ProcessPath!;
        var start = new ProcessStartInfo(self) { RedirectStandardOutput = true, RedirectStandardError = true };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") start.ArgumentList.Add(Environment.GetCommandLineArgs()[0]);
        foreach (var a in args) start.ArgumentList.Add(a);
        start.Environment["NO_COLOR"] = "1";
        if (traceParent.Length > 0) start.Environment["TRACEPARENT"] = traceParent;
        var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {name}");
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            Console.Out.WriteLine($"[{name}] {e.Data}");
            watch(name, e.Data);
        };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) Console.Error.WriteLine($"[{name}] {e.Data}"); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    static void TryKill(Process p)
    {
        try { if (!p.HasExited) p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
    }

    /// <summary>NVIDIA GPUs the driver lists on this host (0 without one).</summary>
    static int LocalGpuCount() =>
        Directory.Exists("/proc/driver/nvidia/gpus") ? Directory.GetDirectories("/proc/driver/nvidia/gpus").Length : 0;
}
