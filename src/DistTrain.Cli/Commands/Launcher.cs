using System.Diagnostics;
using DistTrain.Training.Cluster;
using DistTrain.Training.Config;

namespace DistTrain.Cli.Commands;

/// <summary>
/// Starts this node's processes (the coordinator on its node, one worker per slot) as children of
/// the same executable, forwards their output with a prefix, and exits non-zero if any fails, with a
/// last line that names the cause.
/// </summary>
static class Launcher
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
        var children = new List<LaunchedChild>();
        if (nodeRank == m.CoordinatorNode) children.Add(Start("coordinator", ["coordinator", .. common], traceParent, m.Job));
        for (int slot = 0; slot < node.Slots; slot++)
        {
            var name = $"rank {m.RankOf(nodeRank, slot)}";   // ranks are fixed by the manifest: node order, then slot
            children.Add(Start(name, ["worker", .. common, "--node-rank", $"{nodeRank}", "--local-slot", $"{slot}"], traceParent, m.Job));
        }

        using var stop = ct.Register(() => { foreach (var c in children) TryKill(c.Process); });
        var exits = children.Select(c => c.WaitAsync()).ToList();
        // once one child has failed, the rest get a grace period to stop on their own (the coordinator
        // tells them why); a frozen or stuck one is killed after it, so launch never hangs
        while (exits.Any(e => !e.IsCompleted))
        {
            await Task.WhenAny(exits.Where(e => !e.IsCompleted));
            if (children.Any(c => c.Failed))
            {
                await Task.WhenAny(Task.WhenAll(exits), Task.Delay(FailureGrace));
                foreach (var c in children.Where(c => !c.Process.HasExited))
                {
                    Console.Error.WriteLine($"[launch] {c.Name} still running {FailureGrace.TotalSeconds:F0} s after the job failed; killing it");
                    TryKill(c.Process);
                }
                await Task.WhenAll(exits);
            }
        }
        var failed = children.Where(c => c.Process.ExitCode != 0).ToList();
        if (failed.Count == 0) return 0;
        foreach (var c in failed) Console.Error.WriteLine($"[launch] {c.Name} exited with code {c.Process.ExitCode}");
        // the last line names the cause: the coordinator's reason, else what the first process to fail said
        var cause = children.FirstOrDefault(c => c.Name == "coordinator")?.Cause
            ?? failed.OrderBy(c => c.ExitedAt).Select(c => c.Cause).FirstOrDefault(c => c is not null)
            ?? $"{string.Join(", ", failed.Select(c => c.Name))} exited non-zero; their lines above say why";
        Console.Error.WriteLine($"[launch] job '{m.Job}' failed: {cause}");
        return 1;
    }

    static LaunchedChild Start(string name, string[] args, string traceParent, string job)
    {
        // the same program: `dotnet disttrain.dll ...` or the published `disttrain ...`
        var self = Environment.ProcessPath!;
        var start = new ProcessStartInfo(self) { RedirectStandardOutput = true, RedirectStandardError = true };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") start.ArgumentList.Add(Environment.GetCommandLineArgs()[0]);
        foreach (var a in args) start.ArgumentList.Add(a);
        start.Environment["NO_COLOR"] = "1";
        if (traceParent.Length > 0) start.Environment["TRACEPARENT"] = traceParent;
        return LaunchedChild.Start(name, start, job);
    }

    static void TryKill(Process p)
    {
        try { if (!p.HasExited) p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
    }

    /// <summary>NVIDIA GPUs the driver lists on this host (0 without one).</summary>
    static int LocalGpuCount() =>
        Directory.Exists("/proc/driver/nvidia/gpus") ? Directory.GetDirectories("/proc/driver/nvidia/gpus").Length : 0;
}
