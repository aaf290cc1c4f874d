using System.Globalization;

namespace DistTrain.Cli.Tests.Elastic;

/// <summary>
/// Issue 15's trials: SIGKILL of a random worker at a random moment (checkpoint saves and all-reduces included), many times;
/// every job finishes by itself, trains every window exactly once and, with its replacement back, the uninterrupted run's
/// losses bit for bit. In-memory snapshots every 2 steps (checkpoints every 4 as the fallback): at most 2 steps are lost.
/// Reports the time to recover (kill to the first step of the new generation), the steps lost and what was restored.
/// Not in `make test` (minutes per trial on 2 cores): `make test-elastic-trials` (ELASTIC_TRIALS, default 20).
/// </summary>
[Trait("Category", "Trials")]
[Collection(nameof(ElasticJob))]
public class ElasticTrials(UninterruptedRun uninterrupted) : IClassFixture<UninterruptedRun>
{
    [Fact]
    public void RandomKillsAreRecoveredEveryTime()
    {
        int trials = int.TryParse(Environment.GetEnvironmentVariable("ELASTIC_TRIALS"), out var n) ? n : 20;
        var random = new Random(15);
        var results = new List<(int Slot, int Step, int Delay, double Seconds, int Lost, string From)>();
        for (int trial = 0; trial < trials; trial++)
        {
            // before the last few steps: a kill after the last step finishes the job without a recovery (ElasticTests covers that)
            int slot = random.Next(3), step = random.Next(1, ElasticJob.Steps - 6), delay = random.Next(0, 1000);
            using var dir = new TempFolder();
            using var job = ElasticJob.Launch(dir.Path, elastic: ["elastic.max_restarts=3", "elastic.min_workers=2", "elastic.replace_wait_s=30", $"elastic.snapshot_interval={SnapshotInterval}"]);
            job.WaitForStep(step);
            Thread.Sleep(delay);   // anywhere in the step: forward, all-reduce, a background save
            var killed = DateTime.UtcNow;
            job.Worker(slot).Kill();
            var codes = job.WaitForExit();
            var output = job.Output;
            Assert.True(codes[0] == 0, $"trial {trial}: slot {slot} killed after step {step} + {delay} ms\n{output}");
            Assert.Contains("generation 1 starts with 3 of 3 workers", output);
            var trained = ElasticJob.Trained(job.RunDir);
            Assert.Equal(uninterrupted.Trained.Keys, trained.Keys);
            foreach (var (s, windows) in uninterrupted.Trained) Assert.Equal(windows, trained[s]);
            Assert.Equal(uninterrupted.Losses, ElasticJob.Losses(job.RunDir));
            var from = System.Text.RegularExpressions.Regex.Match(output, @"generation 1 starts with 3 of 3 workers, (restoring the in-memory snapshot|restoring the checkpoint|from the start)").Groups[1].Value;
            results.Add((slot, step, delay, job.SecondsToFirstStep(killed, 1), job.StepsLost(1), from.Replace("restoring the ", "")));
        }
        var seconds = results.Select(r => r.Seconds).Order().ToList();
        var lost = results.Select(r => r.Lost).Order().ToList();
        var report = string.Join('\n', results.Select((r, i) => string.Create(CultureInfo.InvariantCulture,
                $"trial {i,2}: slot {r.Slot} killed after step {r.Step,2} + {r.Delay,3} ms: first step of generation 1 {r.Seconds,5:F1} s after the kill; {r.Lost} steps trained again ({r.From})")))
            + string.Create(CultureInfo.InvariantCulture, $"\n{trials} trials: time to recover min {seconds[0]:F1} / median {seconds[seconds.Count / 2]:F1} / max {seconds[^1]:F1} s; " +
                $"steps lost min {lost[0]} / median {lost[lost.Count / 2]} / max {lost[^1]} (elastic.snapshot_interval {SnapshotInterval}, checkpoint.interval 4); " +
                $"restored from: {string.Join(", ", results.GroupBy(r => r.From).Select(g => $"{g.Key} {g.Count()}"))}");
        Console.WriteLine(report);
        File.WriteAllText(Path.Combine(Disttrain.RepoRoot, "artifacts", "elastic-trials.txt"), report + "\n");
        Assert.All(results, r => Assert.InRange(r.Lost, 0, SnapshotInterval));
    }

    const int SnapshotInterval = 2;
}
