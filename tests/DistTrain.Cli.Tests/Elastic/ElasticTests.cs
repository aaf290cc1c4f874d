using System.Diagnostics;

namespace DistTrain.Cli.Tests.Elastic;

/// <summary>
/// Elastic jobs heal themselves (issue 15): a killed or frozen worker is replaced, or the job goes on without it, and every
/// window is still trained exactly once; real coordinator and worker processes on the CPU ring.
/// </summary>
[Collection(nameof(ElasticJob))]
public class ElasticTests(UninterruptedRun uninterrupted) : IClassFixture<UninterruptedRun>
{
    static readonly string[] Elastic = ["elastic.max_restarts=3", "elastic.min_workers=2", "elastic.replace_wait_s=30"];

    [Fact]
    public void AKilledRankZeroIsReplacedAndTheJobTrainsOnAsIfNothingHappened()
    {
        using var dir = new TempFolder();
        using var job = ElasticJob.Launch(dir.Path, elastic: Elastic);
        job.WaitForStep(6);
        var killed = DateTime.UtcNow;
        job.Worker(0).Kill();   // SIGKILL of rank 0: it commits the checkpoints and writes the metrics
        var codes = job.WaitForExit();
        var output = job.Output;
        Assert.True(codes[0] == 0, output);
        // the last committed checkpoint (a save commits in the background, so the one just begun may not be)
        Assert.True(output.Contains("generation 1 starts with 3 of 3 workers"), output);
        Assert.Contains("[launch] rank 0 (node 0 slot 0) exited with code 137; starting it again (restart 1 of 3 on this slot)", output);
        double seconds = job.SecondsToFirstStep(killed, 1);
        int lost = job.StepsLost(1);
        Console.WriteLine($"recovery: {seconds:F1} s from the kill to the first step of generation 1; {lost} steps trained again");
        Assert.InRange(lost, 0, 8);   // checkpoint.interval, plus the steps a background save takes to commit
        AssertExactlyOnce(job.RunDir);
        // the same ranks on the same shards from the checkpoint of a step: the same losses, bit for bit
        Assert.Equal(uninterrupted.Losses, ElasticJob.Losses(job.RunDir));
    }

    [Fact]
    public void AKilledWorkerComesBackFromItsNeighboursMemoryLosingAtMostOneSnapshotInterval()
    {
        using var dir = new TempFolder();
        // a checkpoint only at the end: before it, what a recovery restores is the in-memory snapshot
        using var job = ElasticJob.Launch(dir.Path, elastic: [.. Elastic, "elastic.snapshot_interval=2", "checkpoint.interval=20"]);
        job.WaitForStep(7);
        var killed = DateTime.UtcNow;
        job.Worker(1).Kill();   // its slice of the snapshot survives in rank 2's memory
        var codes = job.WaitForExit();
        var output = job.Output;
        Assert.True(codes[0] == 0, output);
        Assert.Matches(@"generation 1 starts with 3 of 3 workers, restoring the in-memory snapshot of step \d+ from the workers' memory", output);
        Assert.Matches(@"restored the in-memory snapshot of step \d+ \(taken by generation 0 on 3 ranks\) from the workers' memory", output);
        Assert.Matches(@"snapshot of step 2 in memory: [\d.]+ MB held by this rank \(its slice and its neighbour's\); training waited [\d.]+ s", output);
        int lost = job.StepsLost(1);
        Console.WriteLine($"recovery from a snapshot: {job.SecondsToFirstStep(killed, 1):F1} s from the kill to the first step of generation 1; {lost} steps trained again");
        Assert.InRange(lost, 0, 2);   // elastic.snapshot_interval
        AssertExactlyOnce(job.RunDir);
        // the state of a step, from memory instead of disk: the same losses, bit for bit
        Assert.Equal(uninterrupted.Losses, ElasticJob.Losses(job.RunDir));
    }

    [Fact]
    public void AFrozenWorkerIsKilledAndReplacedAfterTheHeartbeatTimeout()
    {
        using var dir = new TempFolder();
        using var job = ElasticJob.Launch(dir.Path, heartbeatTimeout: 6, elastic: Elastic);   // 3 s starved a healthy rank on a loaded machine
        job.WaitForStep(6);
        var victim = job.Worker(1);
        using (var stop = Process.Start("kill", ["-STOP", victim.Id.ToString()])) stop.WaitForExit();   // alive, connected, silent
        var codes = job.WaitForExit();
        var output = job.Output;
        Assert.True(codes[0] == 0, output);
        Assert.Matches($@"rank 1 \(host 127\.0\.0\.1, pid {victim.Id}\) sent no heartbeat for \d+ s \(heartbeat\.timeout_s 6\)", output);
        Assert.Contains($"[launch] the coordinator gave up on pid {victim.Id}", output);
        Assert.True(output.Contains("generation 1 starts with 3 of 3 workers"), output);
        AssertExactlyOnce(job.RunDir);
        Assert.Equal(uninterrupted.Losses, ElasticJob.Losses(job.RunDir));
    }

    [Fact]
    public void WithoutAReplacementTheJobGoesOnWithTwoWorkers()
    {
        using var dir = new TempFolder();
        // started as a scheduler would, one process each: nobody starts the lost worker again
        using var job = ElasticJob.Separate(dir.Path, "elastic.max_restarts=3", "elastic.min_workers=2", "elastic.replace_wait_s=2");
        job.WaitForStep(6);
        job.Worker(2).Kill();
        var codes = job.WaitForExit();
        var output = job.Output;
        Assert.True(codes[0] == 0, output);   // the coordinator
        Assert.Equal([0, 0], codes[1..3]);     // the survivors
        Assert.True(output.Contains("generation 1 starts with 2 of 3 workers"), output);
        AssertExactlyOnce(job.RunDir);
        // the same samples per step on two ranks: the losses differ only by the float order of the reduction
        var losses = ElasticJob.Losses(job.RunDir);
        Assert.Equal(uninterrupted.Losses.Length, losses.Length);
        double gap = uninterrupted.Losses.Zip(losses, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(gap <= 1e-5, $"max |Δ loss| {gap:E2}");
    }

    [Fact]
    public void WhenNoRestartIsLeftTheJobFailsNamingEveryFailure()
    {
        using var dir = new TempFolder();
        using var job = ElasticJob.Launch(dir.Path, elastic: ["elastic.max_restarts=1", "elastic.replace_wait_s=30"]);
        job.WaitForStep(4);
        int first = job.Worker(1).Id;
        job.Worker(1).Kill();
        job.WaitForStep(10);
        int second = job.Worker(2).Id;
        job.Worker(2).Kill();
        var codes = job.WaitForExit();
        var output = job.Output;
        Assert.NotEqual(0, codes[0]);
        var last = LastLines.Of(output, "launch");
        Assert.Contains($"rank 2 (host 127.0.0.1, pid {second}) lost at step", last);
        Assert.Contains("after 1 recovery (elastic.max_restarts 1); earlier failures: generation 1 after rank 1 (host 127.0.0.1, pid " + first + ") lost at step", last);
    }

    [Fact]
    public void AKilledCoordinatorIsStartedAgainAndNoStepIsTrainedTwice()
    {
        using var dir = new TempFolder();
        using var job = ElasticJob.Launch(dir.Path, elastic: Elastic);
        job.WaitForStep(6);
        job.Coordinator().Kill();
        var codes = job.WaitForExit();
        var output = job.Output;
        Assert.True(codes[0] == 0, output);
        Assert.Contains("[launch] coordinator exited with code 137; starting it again (restart 1 of 3)", output);
        Assert.Contains("coordinator restarted; carrying on with generation 0 (running, 3 ranks", output);
        Assert.False(output.Contains("generation 1"), output);
        // the workers trained on while the coordinator was away: one generation, every step once
        foreach (var file in Directory.GetFiles(job.RunDir, "ledger-rank*.jsonl"))
        {
            var steps = File.ReadLines(file).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement)
                .Select(e => (e.GetProperty("step").GetInt32(), e.GetProperty("generation").GetInt32())).ToList();
            Assert.Equal(Enumerable.Range(1, ElasticJob.Steps).Select(s => (s, 0)), steps);
        }
        AssertExactlyOnce(job.RunDir);
        Assert.Equal(uninterrupted.Losses, ElasticJob.Losses(job.RunDir));
    }

    /// <summary>Every step of the run trained exactly the windows of the uninterrupted run (each window of the epoch once).</summary>
    void AssertExactlyOnce(string runDir)
    {
        var trained = ElasticJob.Trained(runDir);
        Assert.Equal(uninterrupted.Trained.Keys, trained.Keys);
        foreach (var (step, windows) in uninterrupted.Trained) Assert.Equal(windows, trained[step]);
        var all = trained.Values.SelectMany(w => w).ToList();
        Assert.Equal(all.Count, all.Distinct().Count());
    }
}
