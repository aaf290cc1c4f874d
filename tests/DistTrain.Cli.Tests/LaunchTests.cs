using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace DistTrain.Cli.Tests;

/// <summary>`disttrain launch` with real coordinator and worker processes on localhost.</summary>
public class LaunchTests
{
    static readonly TimeSpan Limit = TimeSpan.FromMinutes(8);   // a hang ends here (before the 10-minute blame-hang timeout); a loaded 2-core machine took over 4 minutes

    // 12 sequences per step from 6 canonical shards (2 each), whatever the number of workers
    static string[] Common(string runs, int steps) =>
    [
        "--config", "configs/tiny-muddformer.yaml", "--set", $"train.steps={steps}", "--set", "train.log_interval=2",
        "--set", "train.seq_len=64", "--set", "train.global_batch=12", "--set", "data.shards=6", "--set", "train.eval_interval=0",
        "--set", "train.eval_batches=1", "--set", "optim.warmup_steps=2", "--set", $"train.run_dir={runs}",
    ];

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void WorkersTrainLikeOneProcessWithTheSameGlobalBatch(int workers)
    {
        using var dir = new TempFolder();
        string single = Path.Combine(dir.Path, "single"), launched = Path.Combine(dir.Path, "launched");
        var (singleCode, singleOut) = Disttrain.Run(Limit, ["train", .. Common(single, 10), "--set", "train.micro_batch=12"]);
        Assert.True(singleCode == 0, singleOut);
        var (code, launchOut) = Disttrain.Run(Limit, ["launch", "--manifest", Disttrain.LocalManifest(dir.Path, workers), .. Common(launched, 10), "--set", $"train.micro_batch={12 / workers}"]);
        Assert.True(code == 0, launchOut);
        Assert.Contains("job 'test-" + workers + "' finished", launchOut);

        var expected = MetricsLosses(single);
        var actual = MetricsLosses(launched);
        Assert.Equal(5, expected.Length);
        Assert.Equal(expected.Length, actual.Length);
        // the same samples per step; only the float reduction order differs (measured: 4.8e-7 for 2 and 3 workers)
        double gap = expected.Zip(actual, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(gap <= 1e-5, $"max |Δ loss| {gap:E2}: single {string.Join(" ", expected)} vs {workers} workers {string.Join(" ", actual)}");
    }

    static double[] MetricsLosses(string runs) =>
        File.ReadLines(Path.Combine(Directory.GetDirectories(runs).Single(), "metrics.jsonl"))
            .Select(l => JsonDocument.Parse(l).RootElement.GetProperty("loss").GetDouble()).ToArray();

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void TheLedgerShowsEveryWindowOfAnEpochTrainedExactlyOnce(int workers)
    {
        // the KJV validation split as training data: 1417 windows of 65 tokens; 6 shards of 236, 2 per shard and step: 118 steps
        using var dir = new TempFolder();
        string[] args = [.. Common(dir.Path, 118), "--set", "train.ledger=true", "--set", "train.log_interval=59", "--set", $"train.micro_batch={12 / workers}",
            "--set", "data.train=corpus/kjv/val"];
        var (code, output) = workers == 1
            ? Disttrain.Run(Limit, ["train", .. args])
            : Disttrain.Run(Limit, ["launch", "--manifest", Disttrain.LocalManifest(dir.Path, workers), .. args]);
        Assert.True(code == 0, output);

        var runDir = Directory.GetDirectories(dir.Path).Single();
        var ledgers = Directory.GetFiles(runDir, "ledger-rank*.jsonl");
        Assert.Equal(workers, ledgers.Length);
        var seen = new List<(int Shard, int Epoch, long Index)>();
        foreach (var file in ledgers)
            foreach (var line in File.ReadLines(file))
                foreach (var w in JsonDocument.Parse(line).RootElement.GetProperty("windows").EnumerateArray())
                    seen.Add((w[0].GetInt32(), w[1].GetInt32(), w[2].GetInt64()));

        Assert.All(seen, w => Assert.Equal(0, w.Epoch));
        Assert.Equal(6 * 236, seen.Count);
        Assert.Equal(Enumerable.Range(0, 6 * 236).Select(i => (long)i), seen.Select(w => w.Index).Order());   // each once
        Assert.All(seen, w => Assert.Equal(w.Index / 236, w.Shard));
    }

    [Fact]
    public void KillingAWorkerEndsTheWholeJobQuicklyAndNamesTheLostRank()
    {
        using var dir = new TempFolder();
        var (launch, output) = Disttrain.Start(["launch", "--manifest", Disttrain.LocalManifest(dir.Path, 2), .. Common(dir.Path, 1_000_000), "--set", "train.micro_batch=6"]);
        using var _ = launch;
        try
        {
            var deadline = DateTime.UtcNow + Limit;
            while (!Regex.IsMatch(Snapshot(output), @"step\s+4\s+loss") && DateTime.UtcNow < deadline && !launch.HasExited) Thread.Sleep(100);
            Assert.False(launch.HasExited, Snapshot(output));
            var victim = FindProcess(dir.Path, "--local-slot", "1") ?? throw new InvalidOperationException("worker 0.1 not found\n" + Snapshot(output));

            var killed = Stopwatch.StartNew();
            victim.Kill();   // SIGKILL
            Assert.True(launch.WaitForExit(TimeSpan.FromSeconds(30)), "the job did not end within 30 s\n" + Snapshot(output));
            var seconds = killed.Elapsed.TotalSeconds;
            launch.WaitForExit();
            var text = Snapshot(output);
            Assert.True(seconds < 15, $"the job took {seconds:F1} s to end\n{text}");
            Assert.NotEqual(0, launch.ExitCode);
            // a rank that vanishes without a word is lost, and every process's last line says so
            const string lost = @"rank 1 \(host 127\.0\.0\.1, pid \d+\) lost at step \d+: its heartbeat stream";
            Assert.Matches(@"^\[coordinator\] job 'test-2' failed: " + lost, LastLines.Of(text, "coordinator"));
            Assert.Matches(@"^\[rank 0\] error: rank 0: stopped by the coordinator: " + lost, LastLines.Of(text, "rank 0"));
            Assert.Matches(@"^\[launch\] job 'test-2' failed: " + lost, LastLines.Of(text, "launch"));
        }
        finally
        {
            if (!launch.HasExited) launch.Kill(entireProcessTree: true);
        }
    }

    [Fact]
    public void AFrozenWorkerIsCaughtByTheHeartbeatTimeoutAndTheJobStillEnds()
    {
        using var dir = new TempFolder();
        var manifest = Disttrain.LocalManifest(dir.Path, 2, heartbeatTimeout: 6);   // 3 s starved a healthy rank on a machine loaded 10x its cores
        var (launch, output) = Disttrain.Start(["launch", "--manifest", manifest, .. Common(dir.Path, 1_000_000), "--set", "train.micro_batch=6"]);
        using var _ = launch;
        try
        {
            var deadline = DateTime.UtcNow + Limit;
            while (!Regex.IsMatch(Snapshot(output), @"step\s+4\s+loss") && DateTime.UtcNow < deadline && !launch.HasExited) Thread.Sleep(100);
            var victim = FindProcess(dir.Path, "--local-slot", "1") ?? throw new InvalidOperationException("rank 1 not found\n" + Snapshot(output));
            using (var stop = Process.Start("kill", ["-STOP", victim.Id.ToString()])) stop.WaitForExit();   // alive, connected, silent

            Assert.True(launch.WaitForExit(TimeSpan.FromSeconds(60)), "the job did not end\n" + Snapshot(output));
            launch.WaitForExit();
            var text = Snapshot(output);
            Assert.NotEqual(0, launch.ExitCode);
            Assert.Matches(@"rank 1 \(host 127\.0\.0\.1, pid \d+\) sent no heartbeat for \d+ s \(heartbeat.timeout_s 6\)", text);
            Assert.Contains("[launch] rank 1 still running", text);   // frozen: killed after the grace period
        }
        finally
        {
            if (!launch.HasExited) launch.Kill(entireProcessTree: true);
        }
    }

    [Fact]
    public void AFrozenCoordinatorIsNoticedByTheWorkersWithinTheHeartbeatTimeout()
    {
        using var dir = new TempFolder();
        var manifest = Disttrain.LocalManifest(dir.Path, 2, heartbeatTimeout: 3);
        var (launch, output) = Disttrain.Start(["launch", "--manifest", manifest, .. Common(dir.Path, 1_000_000), "--set", "train.micro_batch=6"]);
        using var _ = launch;
        Process? coordinator = null;
        try
        {
            var deadline = DateTime.UtcNow + Limit;
            while (!Regex.IsMatch(Snapshot(output), @"step\s+4\s+loss") && DateTime.UtcNow < deadline && !launch.HasExited) Thread.Sleep(100);
            coordinator = FindProcess(dir.Path, "coordinator") ?? throw new InvalidOperationException("the coordinator not found\n" + Snapshot(output));
            var frozen = Stopwatch.StartNew();
            using (var stop = Process.Start("kill", ["-STOP", coordinator.Id.ToString()])) stop.WaitForExit();   // alive, connected, silent

            Assert.True(launch.WaitForExit(TimeSpan.FromSeconds(90)), "the job did not end\n" + Snapshot(output));
            launch.WaitForExit();
            var text = Snapshot(output);
            Assert.NotEqual(0, launch.ExitCode);
            Assert.Matches(@"rank [01]: lost the coordinator at http://127\.0\.0\.1:\d+: no answer to a heartbeat for \d+ s \(heartbeat.timeout_s 3\)", text);
            Assert.DoesNotContain("stopped by the coordinator", text);
            Assert.True(frozen.Elapsed < TimeSpan.FromSeconds(60), $"ended {frozen.Elapsed.TotalSeconds:F0} s after the freeze\n{text}");
        }
        finally
        {
            if (coordinator is not null) using (var cont = Process.Start("kill", ["-KILL", coordinator.Id.ToString()])) cont.WaitForExit();
            if (!launch.HasExited) launch.Kill(entireProcessTree: true);
        }
    }

    static string Snapshot(System.Text.StringBuilder output) { lock (output) return output.ToString(); }

    /// <summary>The disttrain process of <paramref name="role"/> (a subcommand) whose command line holds the test's folder.</summary>
    static Process? FindProcess(string marker, string role)
    {
        foreach (var dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            string[] args;
            try { args = File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0'); } catch (IOException) { continue; } catch (UnauthorizedAccessException) { continue; }
            if (args.Contains(role) && args.Any(a => a.Contains(marker)))
                return Process.GetProcessById(pid);
        }
        return null;
    }

    /// <summary>The disttrain child whose command line holds the test's folder and the given argument pair.</summary>
    internal static Process? FindProcess(string marker, string flag, string value)
    {
        foreach (var dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            string[] args;
            try { args = File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0'); } catch (IOException) { continue; } catch (UnauthorizedAccessException) { continue; }
            int i = Array.IndexOf(args, flag);
            if (i >= 0 && i + 1 < args.Length && args[i + 1] == value && args.Any(a => a.Contains(marker)) && args.Contains("worker"))
                return Process.GetProcessById(pid);
        }
        return null;
    }
}

sealed class TempFolder : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("disttrain-launch-").FullName;
    public void Dispose() { try { Directory.Delete(Path, true); } catch (IOException) { } }
}
