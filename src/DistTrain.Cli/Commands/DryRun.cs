using DistTrain.Data;
using DistTrain.Model;
using DistTrain.Training;
using DistTrain.Training.Cluster;
using DistTrain.Training.Config;
using DistTrain.Training.Diagnostics;
using static TorchSharp.torch;

namespace DistTrain.Cli.Commands;

/// <summary>
/// --dry-run of train and launch: everything a run checks before its first step (config, manifest, data, batch split),
/// then what it would do — the resolved config, parameters, tokens per step, the data, a memory estimate per
/// activation-checkpointing policy — and exit 0. No model weights, no run directory, no process started.
/// </summary>
static class DryRun
{
    public static int Print(TrainConfig c, ClusterManifest? manifest = null)
    {
        int world = manifest?.WorldSize ?? 1;
        var plan = DataParallelPlan.For(c, world);
        DataAssignment.For(c, plan, 0);   // the data must feed every shard: the check every rank makes at start
        var (m, t) = (c.Model, c.Train);
        Console.WriteLine($"dry run of {c.Source}: checked; nothing trained, no run directory written");
        if (manifest is not null)
        {
            Console.WriteLine($"manifest {manifest.Source}: job '{manifest.Job}', backend {manifest.Backend}, coordinator {manifest.CoordinatorHost}:{(manifest.PortIsAuto ? "auto (a free port, chosen at launch)" : manifest.CoordinatorPort)}");
            for (int i = 0; i < manifest.Nodes.Count; i++)
            {
                var node = manifest.Nodes[i];
                int first = manifest.RankOf(i, 0);
                Console.WriteLine($"  node {i} {node.Host}: {(node.Gpus.Count > 0 ? $"GPUs [{string.Join(", ", node.Gpus)}]" : $"{node.CpuSlots} CPU slot(s)")}, ranks {first}-{first + node.Slots - 1}");
            }
        }
        Console.WriteLine("resolved config (what config.yaml in the run directory will hold):");
        foreach (var line in ResolvedConfig.Yaml(c).Split('\n', StringSplitOptions.RemoveEmptyEntries)) Console.WriteLine("  " + line);

        long parameters;
        // built on the meta device: shapes without memory, so the 1.4B size costs nothing
        using (var model = ModelCommand.WithDefaultDevice(device("meta"), () => new LanguageModel(m)))
            parameters = ModelInfo.Of(model).Total;
        long tokensPerStep = (long)plan.GlobalBatch * t.SeqLen;
        Console.WriteLine($"model: {m.Arch}, {parameters:N0} parameters");
        if (t.Device.StartsWith("cuda") && !cuda.is_available())
            Console.WriteLine($"note: train.device is {t.Device} and this host's libtorch has no CUDA device: the run would stop here (run it on the GPU host)");
        Console.WriteLine($"batch: {plan.GlobalBatch} sequences x {t.SeqLen} tokens = {tokensPerStep:N0} tokens per step (micro_batch {plan.MicroBatch} x grad_accum {plan.GradAccum} x {world} rank(s)); " +
            $"{t.Steps} steps = {tokensPerStep * t.Steps:N0} tokens");

        var trainFiles = DatasetFiles.Resolve(c.Data.Train);
        long windows = DatasetWindows.Count(trainFiles, c.Data.Column, t.SeqLen);
        long usable = windows / plan.Shards * plan.Shards;
        Console.WriteLine($"data.train {c.Data.Train}: {Files(trainFiles)}; {DatasetWindows.Tokens(trainFiles, c.Data.Column):N0} tokens per epoch (Parquet footers), " +
            $"{windows:N0} windows of {t.SeqLen + 1} tokens, {usable:N0} used in {plan.Shards} shard(s); an epoch is {usable / plan.GlobalBatch:N0} steps");
        if (c.Data.Val is { } val)
        {
            var valFiles = DatasetFiles.Resolve(val);
            Console.WriteLine($"data.val {val}: {Files(valFiles)}; {DatasetWindows.Count(valFiles, c.Data.Column, t.SeqLen):N0} windows; " +
                (t.EvalBatches > 0 ? $"evaluated on at most {t.EvalBatches} batches of {t.MicroBatch}" : "not evaluated (train.eval_batches 0)"));
        }

        Console.WriteLine($"device memory per rank, estimated from tensor shapes (not measured; `disttrain bench` measures), micro-batch {plan.MicroBatch}, {t.Precision}:");
        Console.WriteLine($"  {"policy",-8} {"weights+grads+AdamW",20} {"activations",12} {"total",10}");
        foreach (var e in MemoryEstimate.For(c, parameters, plan.MicroBatch))
        {
            var name = ActivationCheckpointing.Names.First(n => n.Value == e.Policy).Key;
            Console.WriteLine($"  {name,-8} {Gib(e.StateBytes),20} {Gib(e.ActivationBytes),12} {Gib(e.TotalBytes),10}{(e.Policy == t.ActivationCheckpointing.Kind ? "  <- train.activation_checkpointing" : "")}");
        }
        Console.WriteLine("  state: fp32 master + compute copy (bf16 only) + gradients + 2 fp32 AdamW moments per parameter; activations: per layer what the policy keeps " +
            "(coefficients fitted to the 405M measurements in docs/benchmarks.md), one layer recomputed, one loss chunk of logits; allocator cache, workspaces and the CUDA context come on top");
        return 0;
    }

    static string Files(IReadOnlyList<string> files) =>
        $"{files.Count} Parquet file(s) ({string.Join(", ", files.Take(3).Select(Path.GetFileName))}{(files.Count > 3 ? ", ..." : "")})";

    static string Gib(long bytes) => bytes >= 1L << 30 ? $"{bytes / (double)(1L << 30):F2} GiB" : $"{bytes / (double)(1L << 20):F1} MiB";
}
