using System.Diagnostics;
using DistTrain.Training.Cluster;
using DistTrain.Training.Config;

namespace DistTrain.Cli.Commands;

/// <summary>
/// Starts this node's processes (the coordinator on its node, one worker per slot) as children of
/// the same executable, forwards their output with a prefix, and exits non-zero if any fails.
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
        var children = new List<(string Name, Process Process)>();
        if (nodeRank == m.CoordinatorNode) children.Add(("coordinator", Start("coordinator", ["coordinator", .. common], traceParent)));
        for (int slot = 0; slot < node.Slots; slot++)
        {
            var name = $"rank {m.RankOf(nodeRank, slot)}";   // ranks are fixed by the manifest: node order, then slot
            children.Add((name, Start(name, ["worker", .. common, "--node-rank", $"{nodeRank}", "--local-slot", $"{slot}"], traceParent)));
        }

        using var stop = ct.Register(() => { foreach (var (_, p) in children) TryKill(p); });
        var exits = children.Select(c => c.Process.WaitForExitAsync(CancellationToken.None)).ToList();
        // once one child has failed, the rest get a grace period to stop on their own (the coordinator
        // tells them why); a frozen or stuck one is killed after it, so launch never hangs
        while (exits.Any(e => !e.IsCompleted))
        {
            await Task.WhenAny(exits.Where(e => !e.IsCompleted));
            if (children.Any(c => c.Process.HasExited && c.Process.ExitCode != 0))
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
        var failed = children.Where(c => c.Process.ExitCode != 0).ToList();
        foreach (var (name, p) in failed) Console.Error.WriteLine($"[launch] {name} exited with code {p.ExitCode}");
        return failed.Count == 0 ? 0 : 1;
    }

    static Process Start(string name, string[] args, string traceParent)
    {
        // the same program: `dotnet disttrain.dll ...` or the published `disttrain ...`
        var self = Environment.ProcessPath!;
        var start = new ProcessStartInfo(self) { RedirectStandardOutput = true, RedirectStandardError = true };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") start.ArgumentList.Add(Environment.GetCommandLineArgs()[0]);
        foreach (var a in args) start.ArgumentList.Add(a);
        start.Environment["NO_COLOR"] = "1";
        if (traceParent.Length > 0) start.Environment["TRACEPARENT"] = traceParent;
        var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {name}");
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) Console.Out.WriteLine($"[{name}] {e.Data}"); };
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
