using System.Globalization;
using System.Text.RegularExpressions;

namespace DistTrain.Cli.Tests;

/// <summary>train --dry-run and launch --dry-run: checked, described, nothing trained or written (issue 14, item 1).</summary>
public partial class DryRunTests
{
    static readonly TimeSpan Limit = TimeSpan.FromMinutes(5);   // no training: a config load and Parquet footers, on a loaded 2-core machine

    [GeneratedRegex(@"^  (none|block|mudd) +([\d.]+) (MiB|GiB) +([\d.]+) (MiB|GiB) +([\d.]+) (MiB|GiB)", RegexOptions.Multiline)]
    private static partial Regex MemoryRow();

    static double MiB(string value, string unit) => double.Parse(value, CultureInfo.InvariantCulture) * (unit == "GiB" ? 1024 : 1);

    [Fact]
    public void TrainDryRunPrintsTheResolvedConfigSizesDataAndMemoryAndWritesNothing()
    {
        using var dir = new TempFolder();
        var runs = Path.Combine(dir.Path, "runs");
        var (code, output) = Disttrain.Run(Limit, "train", "--config", "configs/tiny-muddformer.yaml", "--dry-run", "--set", "train.seq_len=64",
            "--set", "train.micro_batch=4", "--set", "train.grad_accum=3", "--set", "train.steps=100", "--set", $"train.run_dir={runs}");
        Assert.True(code == 0, output);
        Assert.False(Directory.Exists(runs));   // no run directory

        // the parameter count is the model's own, as `model info` counts it
        var (infoCode, info) = Disttrain.Run(Limit, "model", "info", "--config", "configs/tiny-muddformer.yaml");
        Assert.True(infoCode == 0, info);
        var total = Regex.Match(info, @"total\s*│\s*([\d,]+)").Groups[1].Value;
        Assert.NotEqual("", total);
        Assert.Contains($"model: MUDDFormer, {total} parameters", output);

        Assert.Contains("dry run of configs/tiny-muddformer.yaml: checked; nothing trained, no run directory written", output);
        Assert.Contains("  train:\n    steps: 100\n", output.Replace("\r", ""));
        Assert.Contains($"    run_dir: {runs}\n", output);
        Assert.Contains("batch: 12 sequences x 64 tokens = 768 tokens per step (micro_batch 4 x grad_accum 3 x 1 rank(s)); 100 steps = 76,800 tokens", output);
        Assert.Matches(@"data\.train \S+/configs/corpus/kjv/train: 1 Parquet file\(s\) \(\S+\); [\d,]+ tokens per epoch \(Parquet footers\), [\d,]+ windows of 65 tokens, [\d,]+ used in 1 shard\(s\); an epoch is [\d,]+ steps", output);
        Assert.Contains("estimated from tensor shapes (not measured", output);

        var rows = MemoryRow().Matches(output).ToDictionary(m => m.Groups[1].Value,
            m => (State: MiB(m.Groups[2].Value, m.Groups[3].Value), Activations: MiB(m.Groups[4].Value, m.Groups[5].Value)));
        Assert.Equal(["block", "mudd", "none"], rows.Keys.Order());
        Assert.Single(rows.Values.Select(r => r.State).Distinct());                    // the policy changes activations only
        Assert.True(rows["none"].Activations > rows["block"].Activations, output);     // MUDD: block keeps five hidden-sized tensors per layer,
        Assert.True(rows["block"].Activations > rows["mudd"].Activations, output);     // mudd one plus the small mixing weights
        Assert.Contains("  none", output.Split('\n').Single(l => l.Contains("<- train.activation_checkpointing")));
    }

    [Fact]
    public void LaunchDryRunChecksTheManifestWithTheConfigAndStartsNothing()
    {
        using var dir = new TempFolder();
        var runs = Path.Combine(dir.Path, "runs");
        var manifest = Path.Combine(dir.Path, "m.yaml");
        File.WriteAllText(manifest, """
            job: dry
            backend: ring
            coordinator: {host: 127.0.0.1, port: auto}
            token: value:t
            nodes:
              - {host: 127.0.0.1, cpus: 2}
            """);
        string[] args = ["launch", "--manifest", manifest, "--config", "configs/tiny-transformerpp.yaml", "--dry-run", "--set", "train.micro_batch=3", "--set", $"train.run_dir={runs}"];
        var (code, output) = Disttrain.Run(Limit, args);
        Assert.True(code == 0, output);
        Assert.Contains($"manifest {manifest}: job 'dry', backend ring, coordinator 127.0.0.1:auto (a free port, chosen at launch)", output);
        Assert.Contains("  node 0 127.0.0.1: 2 CPU slot(s), ranks 0-1", output);
        Assert.Contains("33,436 used in 2 shard(s); an epoch is 5,572 steps", output);   // 33,437 windows of 129 tokens, split evenly over data.shards (one per rank)
        Assert.Contains("batch: 6 sequences x 128 tokens = 768 tokens per step (micro_batch 3 x grad_accum 1 x 2 rank(s)); 800 steps = 614,400 tokens", output);
        Assert.DoesNotContain("[coordinator]", output);
        Assert.DoesNotContain("[rank", output);
        Assert.False(Directory.Exists(runs));

        // what a launch would refuse, the dry run refuses the same way
        (code, output) = Disttrain.Run(Limit, [.. args, "--set", "train.global_batch=5"]);
        Assert.True(code == 2, output);
        Assert.Contains("train.global_batch", output);
        Assert.DoesNotContain("   at ", output);
    }
}
