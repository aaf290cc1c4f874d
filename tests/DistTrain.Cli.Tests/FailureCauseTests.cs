using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;

namespace DistTrain.Cli.Tests;

/// <summary>
/// A rank that fails with an error it can describe sends it to the coordinator before it exits: the job stops with
/// "rank N (host) failed at step S: MESSAGE" and every process's last line carries the message, never "lost".
/// </summary>
public class FailureCauseTests
{
    static readonly TimeSpan Limit = TimeSpan.FromMinutes(8);   // a hang ends here (before the 10-minute blame-hang timeout)
    const string Fault = "DISTTRAIN_FAULT_CHECKPOINT";

    static string[] Common(string dir) =>
    [
        "--config", "configs/tiny-muddformer.yaml", "--set", "train.steps=20", "--set", "train.log_interval=2", "--set", "train.seq_len=64",
        "--set", "train.global_batch=12", "--set", "train.micro_batch=6", "--set", "data.shards=6", "--set", "train.eval_interval=0",
        "--set", "train.eval_batches=1", "--set", "optim.warmup_steps=2", "--set", $"train.run_dir={Path.Combine(dir, "runs")}",
        "--set", "checkpoint.interval=2", "--set", $"checkpoint.dir={Path.Combine(dir, "ckpt")}",
    ];

    [Fact]
    public void AnExceptionInOneRanksTrainingStepIsNamedInEveryProcesssLastLine()
    {
        using var dir = new TempFolder();
        // rank 1's save of step 4 throws an exception DistTrain does not expect; it surfaces in rank 1's training step
        var (code, output) = Disttrain.Run(Limit, ["launch", "--manifest", Disttrain.LocalManifest(dir.Path, 2), .. Common(dir.Path)], (Fault, "bug@4@1"));
        Assert.True(code != 0, output);
        var cause = new Regex(@"rank 1 \(127\.0\.0\.1\) failed at step \d+: System\.InvalidOperationException: an unexpected failure in the save of step 4 \(injected by DISTTRAIN_FAULT_CHECKPOINT\)");
        Assert.Matches(@"^\[coordinator\] job 'test-2' failed: " + cause, LastLines.Of(output, "coordinator"));
        Assert.Matches(@"^\[rank 0\] error: rank 0: stopped by the coordinator: " + cause, LastLines.Of(output, "rank 0"));
        Assert.Matches(@"^\[launch\] job 'test-2' failed: " + cause, LastLines.Of(output, "launch"));
        Assert.Contains("[rank 1] Unhandled exception. System.InvalidOperationException: an unexpected failure", output);   // a bug keeps its stack
        Assert.DoesNotContain("lost", output);
    }

    [Fact]
    public void AFullDiskDuringASaveIsNamedInEveryProcesssLastLine()
    {
        using var dir = new TempFolder();
        var (code, output) = Disttrain.Run(Limit, ["launch", "--manifest", Disttrain.LocalManifest(dir.Path, 2), .. Common(dir.Path)], (Fault, "io-error@4@1"));
        Assert.True(code != 0, output);
        // every rank stops on the aborted save (checkpoint.on_failure=stop); the first to report is named, and the message names rank 1's disk
        const string failure = @"the checkpoint of step 4 failed: rank 1 \(127\.0\.0\.1\): \S+/ckpt/\.tmp-step-00000004-\S+: No space left on device \(injected by DISTTRAIN_FAULT_CHECKPOINT\)\. Training stopped";
        // the save of step 4 runs in the background while step 5 trains: its failure stops the rank at step 4 or 5 (about 1 run in 5 here)
        var cause = @"rank [01] \(127\.0\.0\.1\) failed at step [45]: " + failure;
        void Matches(string pattern, string process)
        {
            var line = LastLines.Of(output, process);
            Assert.True(Regex.IsMatch(line, pattern), $"{process}'s last line does not match {pattern}:\n{line}\n--- the whole output ---\n{output}");
        }
        Matches(@"^\[coordinator\] job 'test-2' failed: " + cause, "coordinator");
        Matches(@"^\[launch\] job 'test-2' failed: " + cause, "launch");
        foreach (var rank in new[] { "rank 0", "rank 1" })
            Matches($@"^\[{rank}\] error: ({rank}: stopped by the coordinator: {cause}|{failure})", rank);   // its own error, or the first one's
        Assert.DoesNotContain("lost", output);
    }

    [Fact]
    public void ADataErrorOnOneRankIsNamedInEveryProcesssLastLine()
    {
        using var dir = new TempFolder();
        // two byte-tokenized files of equal length: ASCII (ids below 127), then text whose UTF-8 bytes are 195 and 169;
        // with vocab_size 128 only the second file is out of the vocabulary, and only rank 1 (shards 3-5 of 6) reads it
        var data = Path.Combine(dir.Path, "data");
        foreach (var (name, text) in new[] { ("a", string.Concat(Enumerable.Repeat("In the beginning. ", 1200))), ("b", new string('\u00e9', 10_800)) })
        {
            var input = Path.Combine(dir.Path, $"{name}.txt");
            File.WriteAllText(input, text);
            var (prepared, log) = Disttrain.Run(Limit, "prepare", "--input", input, "--out", Path.Combine(data, name), "--val-fraction", "0");
            Assert.True(prepared == 0, log);
        }
        string[] args = ["launch", "--manifest", Disttrain.LocalManifest(dir.Path, 2), .. Common(dir.Path), "--set", $"data.train={data}",
            "--set", "model.vocab_size=128", "--set", "data.end_of_text=127", "--set", "train.eval_batches=0"];
        var (code, output) = Disttrain.Run(Limit, args);
        Assert.True(code != 0, output);
        var own = LastLines.Of(output, "rank 1");
        Assert.Matches(@"^\[rank 1\] error: \S+/data/b/\S+\.parquet: row group 0, row 0: token id (195|169) is outside the vocabulary \[0, 128\)\. ", own);
        string cause = $"rank 1 (127.0.0.1) failed at step 0: {own["[rank 1] error: ".Length..]}";
        Assert.Equal($"[coordinator] job 'test-2' failed: {cause}", LastLines.Of(output, "coordinator"));
        Assert.Equal($"[rank 0] error: rank 0: stopped by the coordinator: {cause}", LastLines.Of(output, "rank 0"));
        Assert.Equal($"[launch] job 'test-2' failed: {cause}", LastLines.Of(output, "launch"));
        Assert.DoesNotContain("lost", output);
    }

    [Fact]
    public void AConfigErrorOnOneNodeIsNamedInEveryProcesssLastLine()
    {
        using var dir = new TempFolder();
        string[] common = ["--manifest", Disttrain.LocalManifest(dir.Path, 2), .. Common(dir.Path)];
        // separate processes, as a scheduler starts them: rank 1's node has another config (12 data shards, the job has 6)
        var processes = new (string Name, string[] Args)[]
        {
            ("coordinator", ["coordinator", .. common]),
            ("rank 0", ["worker", .. common, "--local-slot", "0"]),
            ("rank 1", ["worker", .. common, "--set", "data.shards=12", "--local-slot", "1"]),
        }.Select(p => (p.Name, Started: Disttrain.Start(p.Args))).ToList();
        var (outputs, all) = WaitAll(processes);

        var own = LastLines.Of(outputs["rank 1"].Output);
        Assert.StartsWith("error: rank 1: the coordinator assigned shards [", own);
        Assert.Contains("every node must see the same data set and config", own);
        string cause = $"rank 1 (127.0.0.1) failed at step 0: {own["error: ".Length..]}";
        Assert.Equal($"job 'test-2' failed: {cause}", LastLines.Of(outputs["coordinator"].Output));
        Assert.Equal($"error: rank 0: stopped by the coordinator: {cause}", LastLines.Of(outputs["rank 0"].Output));
        Assert.DoesNotContain("lost", all);
        Assert.DoesNotContain("heartbeat for", all);
    }

    [Fact]
    public void AConfigErrorBeforeRegisteringStopsTheWaitingJobAndIsNamedInEveryProcesssLastLine()
    {
        using var dir = new TempFolder();
        var manifest = Disttrain.LocalManifest(dir.Path, 2);
        string[] common = ["--manifest", manifest, .. Common(dir.Path)];
        var processes = new List<(string Name, (Process, StringBuilder) Started)>
        {
            ("coordinator", Disttrain.Start(["coordinator", .. common])),
            ("rank 0", Disttrain.Start(["worker", .. common, "--local-slot", "0"])),
        };
        try
        {
            // rank 0 waits in its registration; then rank 1 starts with a config that does not load
            var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
            while (!Disttrain.Run(Limit, "status", "--manifest", manifest).Output.Contains("(1/2 registered)"))
                Assert.True(DateTime.UtcNow < deadline, "rank 0 did not register within 2 minutes");
        }
        catch
        {
            foreach (var (_, (process, _)) in processes) process.Kill(entireProcessTree: true);
            throw;
        }
        processes.Add(("rank 1", Disttrain.Start(["worker", .. common, "--set", "train.no_such_key=1", "--local-slot", "1"])));
        var (outputs, all) = WaitAll(processes);

        var own = LastLines.Of(outputs["rank 1"].Output);
        Assert.Matches(@"^error: .*train\.no_such_key", own);
        string cause = $"rank 1 (127.0.0.1) failed before registering: {own["error: ".Length..]}";
        Assert.Equal($"job 'test-2' failed: {cause}", LastLines.Of(outputs["coordinator"].Output));
        Assert.Equal($"error: stopped by the coordinator before the job started: {cause}", LastLines.Of(outputs["rank 0"].Output));
        Assert.All(outputs.Values, o => Assert.True(o.Code != 0, all));
    }

    /// <summary>Waits for every process (killing all of them past the limit) and returns each one's exit code and output.</summary>
    static (Dictionary<string, (int Code, string Output)>, string All) WaitAll(List<(string Name, (Process Process, StringBuilder Output) Started)> processes)
    {
        var outputs = new Dictionary<string, (int Code, string Output)>();
        try
        {
            foreach (var (name, (process, output)) in processes)
            {
                Assert.True(process.WaitForExit(Limit), $"{name} did not end\n{Snapshot(output)}");
                process.WaitForExit();
                outputs[name] = (process.ExitCode, Snapshot(output));
            }
        }
        finally
        {
            foreach (var (_, (process, _)) in processes) { if (!process.HasExited) process.Kill(entireProcessTree: true); process.Dispose(); }
        }
        return (outputs, string.Join("\n", outputs.Select(o => $"--- {o.Key} (exit {o.Value.Code})\n{o.Value.Output}")));
    }

    static string Snapshot(StringBuilder output) { lock (output) return output.ToString(); }
}
