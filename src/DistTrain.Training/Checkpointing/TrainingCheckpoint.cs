using System.Text.Json;
using DistTrain.Checkpoint;
using DistTrain.Data;
using DistTrain.Distributed;
using DistTrain.Model;
using DistTrain.Training.Config;
using DistTrain.Training.Optim;
using static TorchSharp.torch;

namespace DistTrain.Training.Checkpointing;

/// <summary>
/// Sharded, atomic training checkpoints. The flat fp32 master weights and both AdamW moments are
/// cut into W contiguous slices; rank r writes slice r (shard-r-of-W.safetensors) and its data
/// cursors, then rank 0 checksums every file, writes manifest.json, renames the temporary folder
/// into place and moves "latest". Loading reassembles the slices of any world size, so a job can
/// resume on another number of ranks; the canonical data shards carry their cursors across.
/// </summary>
public static class TrainingCheckpoint
{
    static readonly string[] Buffers = ["master", "exp_avg", "exp_avg_sq"];   // the names of the flat buffers in a shard file

    /// <summary>Writes the checkpoint of <paramref name="step"/>; returns its folder, this rank's bytes and the seconds training waited.</summary>
    public static (string Dir, long Bytes, double Seconds) Save(CheckpointOptions options, TrainConfig config, ICommunicator comm, FlatParameters flat, FlatAdamW optimizer,
        DataParallelPlan plan, int step, long tokens, IReadOnlyDictionary<int, DataCursor> cursors)
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        var prefix = $".tmp-{CheckpointDirectory.StepName(step)}-";
        comm.Barrier();
        if (comm.Rank == 0)
        {
            // leftovers of an interrupted save of this same step (a crash, then a resume from an older checkpoint)
            foreach (var stale in CheckpointDirectory.Partial(options.Dir).Where(p => Path.GetFileName(p).StartsWith(prefix)))
                Directory.Delete(stale, recursive: true);
            CheckpointDirectory.BeginTemp(options.Dir, step);
        }
        comm.Barrier();
        var temp = CheckpointDirectory.Partial(options.Dir).Single(p => Path.GetFileName(p).StartsWith(prefix));

        var (start, count) = Slice(flat.Count, comm.Rank, comm.WorldSize);
        var scalars = optimizer.Scalars;
        var shardPath = Path.Combine(temp, ShardName(comm.Rank, comm.WorldSize));
        // device-to-host copies of this rank's slices: the only stall on the training stream
        using (var scope = NewDisposeScope())
        {
            var tensors = new[] { flat.Master, optimizer.ExpAvg, optimizer.ExpAvgSq }
                .Select((t, i) => (Buffers[i], t.narrow(0, start, count).to(ScalarType.Float32).cpu())).ToList();
            Safetensors.Write(shardPath, tensors,
                new Dictionary<string, string> { ["flat_start"] = $"{start}", ["flat_count"] = $"{count}" });
        }
        long bytes = new FileInfo(shardPath).Length;
        File.WriteAllText(Path.Combine(temp, $"cursors-{comm.Rank:D5}.json"),
            JsonSerializer.Serialize(cursors.ToDictionary(c => c.Key.ToString(), c => c.Value.ToJson())));
        comm.Barrier();
        CheckpointFaults.At("after-shards", step);

        var final = Path.Combine(options.Dir, CheckpointDirectory.StepName(step));
        if (comm.Rank == 0)
        {
            var allCursors = new Dictionary<string, string>();
            for (int r = 0; r < comm.WorldSize; r++)
                foreach (var (shard, cursor) in JsonSerializer.Deserialize<Dictionary<string, string>>(File.ReadAllText(Path.Combine(temp, $"cursors-{r:D5}.json")))!)
                    allCursors[shard] = cursor;
            var names = Directory.GetFiles(temp).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
            var manifest = new CheckpointManifest
            {
                Step = step, Tokens = tokens, WorldSize = comm.WorldSize,
                Config = YamlTree.Write(config.Tree), ModelConfig = HfExport.ConfigJson(config.Model, ScalarType.Float32),
                DataCursors = JsonSerializer.Serialize(new { shards = plan.Shards, cursors = allCursors }),
                Scalars = new() { ["adam_steps"] = scalars.Steps, ["first_non_finite"] = scalars.FirstNonFinite, ["flat_count"] = flat.Count },
                Extra = new() { ["layout"] = JsonSerializer.Serialize(flat.Layout.Select(l => new { l.Name, l.Offset, l.Shape })) },
                Files = names.Select(n => ManifestFile.Of(temp, n!)).ToList(),
                Tensors = names.Where(n => n!.EndsWith(".safetensors")).SelectMany(n => ManifestTensor.Of(n!, Safetensors.Open(Path.Combine(temp, n!)))).ToList(),
            };
            manifest.Write(temp);
            CheckpointFaults.At("after-manifest", step);
            // a complete checkpoint of this step that "latest" does not name (saved, then the run went back
            // to an older one) is moved aside whole, never overwritten in place; the next KeepLast removes it
            if (Directory.Exists(final))
                Directory.Move(final, Path.Combine(options.Dir, $".tmp-superseded-{Path.GetFileName(final)}-{Guid.NewGuid():N}"));
            CheckpointDirectory.Commit(temp, final);
            CheckpointFaults.At("after-rename", step);
            CheckpointDirectory.PointLatest(options.Dir, Path.GetFileName(final));
            CheckpointDirectory.KeepLast(options.Dir, options.Keep);
        }
        comm.Barrier();
        return (final, bytes, System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds);
    }

    /// <summary>
    /// Loads master weights, moments and optimizer scalars into this rank's buffers; returns the
    /// folder, the step, the cursors of every data shard, and the partial folders of interrupted
    /// saves that were passed over.
    /// </summary>
    public static (string Dir, int Step, IReadOnlyDictionary<int, DataCursor> Cursors, IReadOnlyList<string> Partial) Load(string resume, CheckpointOptions options, FlatParameters flat, FlatAdamW optimizer, DataParallelPlan plan)
    {
        var dir = resume == "latest"
            ? CheckpointDirectory.ResolveLatest(options.Dir) ?? throw new CheckpointException($"{options.Dir}: no latest checkpoint to resume from (checkpoint.dir); train without checkpoint.resume first")
            : Path.GetFullPath(resume);
        var manifest = CheckpointManifest.Read(dir);
        manifest.Verify(dir);
        long count = (long)manifest.Scalars.GetValueOrDefault("flat_count");
        var layout = JsonSerializer.Serialize(flat.Layout.Select(l => new { l.Name, l.Offset, l.Shape }));
        if (count != flat.Count || manifest.Extra.GetValueOrDefault("layout") != layout)
            throw new CheckpointException($"{dir}: written for another model ({count:N0} flat parameters, this config has {flat.Count:N0}); resume with the config it was saved with");
        using var cursorsJson = JsonDocument.Parse(manifest.DataCursors);
        int shards = cursorsJson.RootElement.GetProperty("shards").GetInt32();
        if (shards != plan.Shards)
            throw new CheckpointException($"{dir}: saved with data.shards {shards}, this run has {plan.Shards}; set data.shards={shards} (any world size dividing it resumes the same sample order)");

        ReadSlices(dir, manifest, [("master", flat.Master), ("exp_avg", optimizer.ExpAvg), ("exp_avg_sq", optimizer.ExpAvgSq)]);
        flat.PublishMaster();
        optimizer.Scalars = (manifest.Scalars["adam_steps"], (long)manifest.Scalars["first_non_finite"]);
        var cursors = cursorsJson.RootElement.GetProperty("cursors").EnumerateObject()
            .ToDictionary(p => int.Parse(p.Name), p => DataCursor.FromJson(p.Value.GetString()!));
        return (dir, (int)manifest.Step, cursors, CheckpointDirectory.Partial(options.Dir));
    }

    /// <summary>
    /// The model of a checkpoint, for export, scoring and evaluation: its config from the manifest,
    /// its weights from the fp32 master slices (checksums verified first), in fp32 on the CPU.
    /// Also returns the resolved training config tree it was trained with.
    /// </summary>
    public static (LanguageModel Model, Dictionary<string, object?> Config, CheckpointManifest Manifest) LoadModel(string checkpoint)
    {
        var dir = Path.GetFullPath(checkpoint);
        var manifest = CheckpointManifest.Read(dir);
        manifest.Verify(dir);
        var tree = YamlTree.Parse(manifest.Config, $"{dir}/manifest.json");
        var model = new LanguageModel(TrainConfigLoader.ModelFromTree(tree, $"{dir}/manifest.json"));
        using var flat = new FlatParameters(model, ScalarType.Float32, CPU);
        long count = (long)manifest.Scalars["flat_count"];
        if (count != flat.Count) throw new CheckpointException($"{dir}: {count:N0} flat parameters, its own config builds {flat.Count:N0}; the checkpoint is inconsistent");
        ReadSlices(dir, manifest, [("master", flat.Master)]);
        // the parameters now live in flat's buffer; detach them from it so the model outlives it
        using (no_grad())
            foreach (var (_, p) in model.named_parameters())
            {
                var own = p.detach().clone();
                p.set_(own);
            }
        return (model, tree, manifest);
    }

    /// <summary>Reassembles flat buffers from the slices of every shard file, whatever world size wrote them.</summary>
    static void ReadSlices(string dir, CheckpointManifest manifest, IReadOnlyList<(string Name, Tensor Target)> buffers)
    {
        long count = (long)manifest.Scalars["flat_count"];
        using var noGrad = no_grad();
        for (int r = 0; r < manifest.WorldSize; r++)
        {
            var file = Safetensors.Open(Path.Combine(dir, ShardName(r, manifest.WorldSize)));
            var (start, n) = Slice(count, r, manifest.WorldSize);
            foreach (var (name, target) in buffers)
            {
                using var slice = file.Read(name);
                if (slice.numel() != n) throw new CheckpointException($"{file.Path}: {name} holds {slice.numel()} values, the manifest's slice is {n}");
                target.narrow(0, start, n).copy_(slice);
            }
        }
    }

    static string ShardName(int rank, int world) => $"shard-{rank:D5}-of-{world:D5}.safetensors";

    /// <summary>Rank r's contiguous slice of a flat buffer of <paramref name="count"/> values.</summary>
    static (long Start, long Count) Slice(long count, int rank, int world) => (count * rank / world, count * (rank + 1) / world - count * rank / world);
}
