using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace DistTrain.Cli.Tests;

/// <summary>SIGINT / SIGTERM to real `disttrain train` and `disttrain launch` processes: a graceful stop with a checkpoint, and resume.</summary>
public partial class StopTests
{
    static readonly TimeSpan Limit = TimeSpan.FromMinutes(8);   // multi-process runs on a loaded 2-core machine

    static string[] Tiny(string runs, int steps) =>
    [
        "--config", "configs/tiny-transformerpp.yaml", "--set", $"train.steps={steps}", "--set", "train.log_interval=5",
        "--set", "train.seq_len=32", "--set", "train.micro_batch=4", "--set", "train.eval_interval=0", "--set", "train.eval_batches=1",
        "--set", "optim.warmup_steps=2", "--set", $"train.run_dir={runs}",
    ];

    [GeneratedRegex(@"^(\[[a-z0-9 ]+\] )?stopped at step (\d+); checkpoint (\S+); resume with: (.+)$", RegexOptions.Multiline)]
    internal static partial Regex StoppedLine();

    [Fact]
    public void SigintStopsTrainAfterTheStepWithACheckpointThatResumeLatestContinues()
    {
        using var dir = new TempFolder();
        var runs = Path.Combine(dir.Path, "runs");
        var (process, output) = Disttrain.Start(["train", .. Tiny(runs, 2000)]);
        using (process)
        {
            WaitFor(process, output, "step     10 ");
            Signal(process.Id, "INT");
            Finish(process, output);
            var text = Text(output);
            Assert.True(process.ExitCode == 130, $"exit {process.ExitCode}:\n{text}");
            var stopped = StoppedLine().Match(text);
            Assert.True(stopped.Success, text);
            int step = int.Parse(stopped.Groups[2].Value);
            string checkpoint = stopped.Groups[3].Value;
            Assert.InRange(step, 10, 1999);
            Assert.Equal($"step-{step:D8}", Path.GetFileName(checkpoint));
            Assert.StartsWith(runs, checkpoint);   // the default: the run directory's checkpoints/
            Assert.Equal(step, ManifestStep(checkpoint));
            Assert.EndsWith($"--resume {checkpoint}", stopped.Groups[4].Value);
            Assert.Contains("train --config configs/tiny-transformerpp.yaml", stopped.Groups[4].Value);
            Assert.DoesNotContain("   at ", text);   // no stack trace

            var (code, resumed) = Disttrain.Run(Limit, ["train", .. Tiny(runs, step + 5), "--resume", "latest"]);
            Assert.True(code == 0, resumed);
            Assert.Contains($"resuming from {checkpoint} at step {step}", resumed);
            Assert.Contains($"step {step + 5,6} ", resumed);
        }
    }

    [Fact]
    public void ASecondSigintDuringTheGracefulStopExitsAtOnceWithoutAStackTrace()
    {
        using var dir = new TempFolder();
        // a wider model: its step and its save take long enough for the second signal to land inside the stop
        var (process, output) = Disttrain.Start(["train", .. Tiny(Path.Combine(dir.Path, "runs"), 2000), "--set", "model.dim=512", "--set", "model.n_layer=8"]);
        using (process)
        {
            WaitFor(process, output, "step      5 ");
            Signal(process.Id, "INT");
            WaitFor(process, output, "SIGINT: stopping after the current step");
            Signal(process.Id, "INT");
            var clock = Stopwatch.StartNew();
            Finish(process, output);
            var text = Text(output);
            Assert.True(process.ExitCode == 130, $"exit {process.ExitCode}:\n{text}");
            Assert.Contains("SIGINT again: exiting at once", text);
            Assert.DoesNotMatch(StoppedLine(), text);
            Assert.DoesNotContain("   at ", text);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"took {clock.Elapsed} to exit after the second SIGINT");
        }
    }

    [Fact]
    public void SigtermToLaunchStopsEveryProcessOfATwoWorkerJobWithOneCommittedCheckpoint()
    {
        using var dir = new TempFolder();
        var runs = Path.Combine(dir.Path, "runs");
        var manifest = Disttrain.LocalManifest(dir.Path, 2);
        var (process, output) = Disttrain.Start(["launch", "--manifest", manifest, .. Tiny(runs, 2000), "--set", "train.micro_batch=2"]);
        using (process)
        {
            WaitFor(process, output, "[rank 0] step     10 ");
            Signal(process.Id, "TERM");
            Finish(process, output);
            var text = Text(output);
            Assert.True(process.ExitCode == 143, $"exit {process.ExitCode}:\n{text}");
            var lines = StoppedLine().Matches(text).ToDictionary(m => m.Groups[1].Value.Trim(), m => (Step: int.Parse(m.Groups[2].Value), Checkpoint: m.Groups[3].Value, Resume: m.Groups[4].Value));
            Assert.True(lines.Keys.Order().SequenceEqual(["", "[rank 0]", "[rank 1]"]), text);   // launch's own line and each worker's
            var (step, checkpoint, resume) = lines[""];
            Assert.All(lines.Values, l => Assert.Equal((step, checkpoint), (l.Step, l.Checkpoint)));
            Assert.Contains($"[coordinator] job 'test-2' stopped at step {step}; checkpoint {checkpoint}", text);
            Assert.DoesNotContain("exited with code", text);
            Assert.Equal(step, ManifestStep(checkpoint));
            Assert.Contains($"launch --manifest {manifest}", resume);

            var (code, resumed) = Disttrain.Run(Limit, ["launch", "--manifest", manifest, .. Tiny(runs, step + 2), "--set", "train.micro_batch=2", "--resume", checkpoint]);
            Assert.True(code == 0, resumed);
            Assert.Contains($"resuming from {checkpoint} at step {step}", resumed);
            // the job continues its run directory: the coordinator names it, both ranks write into it, one metrics curve
            var run = Directory.GetDirectories(runs).Single();
            Assert.Contains($"waiting for 2 workers; run {Path.GetFileName(run)}", resumed);
            var logged = File.ReadLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt32()).ToList();
            Assert.Equal(logged.Distinct().Order(), logged);
            Assert.Equal(step + 2, logged[^1]);
        }
    }

    [Fact]
    public void SigtermToOneWorkerStopsTheWholeJobAfterTheSameStep()
    {
        // scancel signals every process of a step; here only rank 1 gets it: it asks the coordinator, which stops everyone
        using var dir = new TempFolder();
        var (process, output) = Disttrain.Start(["launch", "--manifest", Disttrain.LocalManifest(dir.Path, 2), .. Tiny(Path.Combine(dir.Path, "runs"), 2000), "--set", "train.micro_batch=2"]);
        using (process)
        {
            WaitFor(process, output, "[rank 0] step     10 ");
            using var worker = LaunchTests.FindProcess(dir.Path, "--local-slot", "1");
            Assert.NotNull(worker);
            Signal(worker.Id, "TERM");
            Finish(process, output);
            var text = Text(output);
            Assert.True(process.ExitCode == 143, $"exit {process.ExitCode}:\n{text}");
            Assert.Contains("rank 1's signal asks for a graceful stop (exit code 143)", text);
            var steps = StoppedLine().Matches(text).Select(m => (Who: m.Groups[1].Value.Trim(), Step: int.Parse(m.Groups[2].Value))).ToList();
            Assert.True(steps.Select(s => s.Who).Order().SequenceEqual(["", "[rank 0]", "[rank 1]"]), text);
            Assert.Single(steps.Select(s => s.Step).Distinct());
        }
    }

    [Fact]
    public void ADefaultRunSavesEveryTenthOfItsStepsAndTheLast()
    {
        using var dir = new TempFolder();
        var runs = Path.Combine(dir.Path, "runs");
        var (code, output) = Disttrain.Run(Limit, ["train", .. Tiny(runs, 25)]);
        Assert.True(code == 0, output);
        // checkpoint.interval auto: 25 steps save every 3, and after the last; checkpoint.keep 3
        var checkpoints = Path.Combine(Directory.GetDirectories(runs).Single(), "checkpoints");
        Assert.Equal(["latest", "step-00000021", "step-00000024", "step-00000025"], Directory.GetFileSystemEntries(checkpoints).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal(25, ManifestStep(Path.Combine(checkpoints, "step-00000025")));
        Assert.Equal("step-00000025", File.ReadAllText(Path.Combine(checkpoints, "latest")).Trim());
    }

    static int ManifestStep(string checkpoint) =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(checkpoint, "manifest.json"))).RootElement.GetProperty("step").GetInt32();

    internal static void Signal(int pid, string signal)
    {
        using var kill = Process.Start("kill", [$"-{signal}", $"{pid}"]);
        kill.WaitForExit();
        Assert.Equal(0, kill.ExitCode);
    }

    internal static string Text(StringBuilder output) { lock (output) return output.ToString(); }

    internal static void WaitFor(Process process, StringBuilder output, string marker)
    {
        var clock = Stopwatch.StartNew();
        while (!Text(output).Contains(marker))
        {
            if (process.HasExited || clock.Elapsed > Limit)
            {
                if (!process.HasExited) process.Kill(entireProcessTree: true);
                Assert.Fail($"'{marker}' never appeared:\n{Text(output)}");
            }
            Thread.Sleep(100);
        }
    }

    internal static void Finish(Process process, StringBuilder output)
    {
        if (process.WaitForExit(Limit)) { process.WaitForExit(); return; }
        process.Kill(entireProcessTree: true);
        Assert.Fail($"did not exit within {Limit}:\n{Text(output)}");
    }
}
