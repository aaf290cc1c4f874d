namespace DistTrain.Cli.Tests.Elastic;

/// <summary>The elastic job of <see cref="ElasticJob"/> run once without a fault: what every recovered run must equal.</summary>
public sealed class UninterruptedRun : IDisposable
{
    readonly TempFolder _dir = new();

    public UninterruptedRun()
    {
        using var job = ElasticJob.Launch(_dir.Path, elastic: ["elastic.max_restarts=3", "elastic.min_workers=2", "elastic.replace_wait_s=30"]);
        var codes = job.WaitForExit();
        if (codes[0] != 0) throw new InvalidOperationException($"the uninterrupted run failed\n{job.Output}");
        Losses = ElasticJob.Losses(job.RunDir);
        Trained = ElasticJob.Trained(job.RunDir);
        if (Losses.Length != ElasticJob.Steps || Trained.Count != ElasticJob.Steps) throw new InvalidOperationException($"{Losses.Length} losses, {Trained.Count} steps in the ledger\n{job.Output}");
    }

    public double[] Losses { get; }
    public SortedDictionary<int, List<(int Shard, int Epoch, long Index)>> Trained { get; }

    public void Dispose() => _dir.Dispose();
}
