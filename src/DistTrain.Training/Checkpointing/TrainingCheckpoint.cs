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
/// Loading sharded training checkpoints (<see cref="CheckpointSaver"/> writes them). The flat fp32
/// master weights and both AdamW moments are cut into W contiguous slices, rank r's in
/// shard-r-of-W.safetensors. Loading reassembles the slices of any world size, so a job can
/// resume on another number of ranks; the canonical data shards carry their cursors across.
/// </summary>
public static class TrainingCheckpoint
{
    /// <summary>
    /// Loads master weights, moments and optimizer scalars into this rank's buffers; returns the
    /// folder, the step, the cursors of every data shard, and the partial folders of interrupted
    /// saves that were passed over.
    /// </summary>
    /// <param name="job">this run's job: its interrupted saves are the ones the next commit removes</param>
    public static ResumeReport Load(string resume, CheckpointOptions options, FlatParameters flat, FlatAdamW optimizer, DataParallelPlan plan, string job)
    {
        var (dir, manifest, refused) = Choose(resume, options);
        if (WeightsCheckpoint.IsImported(manifest))
            throw new CheckpointException($"{dir}: imported from {manifest.Extra[WeightsCheckpoint.ImportedFromKey]}: weights only (no optimizer state, no data position), " +
                $"nothing to resume; start a run from it with --init-from {dir} (checkpoint.init_from)");
        long count = (long)manifest.Scalars.GetValueOrDefault("flat_count");
        if (count != flat.Count || manifest.Extra.GetValueOrDefault("layout") != LayoutJson(flat))
            throw new CheckpointException($"{dir}: written for another model ({count:N0} flat parameters, this config has {flat.Count:N0}); resume with the config it was saved with");
        using var cursorsJson = JsonDocument.Parse(manifest.DataCursors);
        int shards = cursorsJson.RootElement.GetProperty("shards").GetInt32();
        if (shards != plan.Shards)
            throw new CheckpointException($"{dir}: saved with data.shards {shards}, this run has {plan.Shards}; set data.shards={shards} (any world size dividing it resumes the same sample order)");

        ReadSlices(dir, manifest, [("master", flat.Master), ("exp_avg", optimizer.ExpAvg), ("exp_avg_sq", optimizer.ExpAvgSq)]);
        flat.PublishMaster();
        optimizer.Counters = (manifest.Scalars["adam_steps"], (long)manifest.Scalars["first_non_finite"]);
        var cursors = cursorsJson.RootElement.GetProperty("cursors").EnumerateObject()
            .ToDictionary(p => int.Parse(p.Name), p => DataCursor.FromJson(p.Value.GetString()!));
        return new ResumeReport(dir, (int)manifest.Step, cursors, CheckpointDirectory.PartialSaves(options.Dir).Select(p => Ignored(p, options, job)).ToList(), refused)
        {
            RunDirectory = manifest.Extra.GetValueOrDefault(RunDirectoryKey),
        };
    }

    static IgnoredSave Ignored(PartialSave partial, CheckpointOptions options, string job) => new(partial.Path, partial.Owner switch
    {
        { } o when o.Job == job => "an interrupted save of this job (no complete manifest); it is removed when this job's next save commits"
            + (options.Interval > 0 ? "" : " (this run saves none: checkpoint.interval is 0)"),
        { } o => $"an unfinished save of job '{o.Job}' (no complete manifest); left alone: that job may still be writing it, and its own next save removes it",
        null => "an unfinished save that names no job (written by an older DistTrain); left alone: delete it by hand once no job writes to " + options.Dir,
    });

    /// <summary>
    /// The checkpoint to resume from, verified (checksums). "latest" is the one root/latest names; with
    /// checkpoint.fallback a latest that fails verification is passed over (and reported) for the
    /// newest finished checkpoint that passes.
    /// </summary>
    static (string Dir, CheckpointManifest Manifest, IReadOnlyList<string> Refused) Choose(string resume, CheckpointOptions options)
    {
        if (resume != "latest")
        {
            var path = Path.GetFullPath(resume);
            return (path, Verified(path), []);
        }
        if (!options.Fallback)
        {
            var latest = CheckpointDirectory.ResolveLatest(options.Dir) ?? throw NoLatest(options);
            try { return (latest, Verified(latest), []); }
            catch (CheckpointException e) { throw new CheckpointException($"{e.Message}; or resume with --resume-fallback (checkpoint.fallback=true) to take the newest good checkpoint"); }
        }
        var refused = new List<string>();
        string? named = null;
        try { named = CheckpointDirectory.ResolveLatest(options.Dir); }
        catch (CheckpointException e) { refused.Add(e.Message); }
        var candidates = CheckpointDirectory.Complete(options.Dir).Reverse().ToList();
        if (named is not null) candidates = [named, .. candidates.Where(c => c != named)];
        foreach (var dir in candidates)
        {
            try { return (dir, Verified(dir), refused); }
            catch (CheckpointException e) { refused.Add(e.Message); }
        }
        if (candidates.Count == 0) throw NoLatest(options);
        throw new CheckpointException($"{options.Dir}: no checkpoint passes verification: {string.Join("; ", refused)}");
    }

    /// <summary>
    /// Reads and verifies a training checkpoint: checksums, headers and tensor index (<see cref="CheckpointManifest.Verify"/>),
    /// and that the file list names exactly the shard files of its world size — only those are read, never a file
    /// named from world_size alone.
    /// </summary>
    public static CheckpointManifest Verified(string dir)
    {
        var manifest = CheckpointManifest.Read(dir);
        manifest.Verify(dir);
        var listed = manifest.Files.Select(f => f.Name).Where(n => n.EndsWith(".safetensors", StringComparison.Ordinal)).ToHashSet();
        var expected = Enumerable.Range(0, Math.Max(0, manifest.WorldSize)).Select(r => ShardName(r, manifest.WorldSize)).ToHashSet();
        if (expected.Count == 0 || !listed.SetEquals(expected))
            throw new CheckpointException($"{Path.Combine(dir, CheckpointDirectory.ManifestFileName)}: world_size {manifest.WorldSize} needs the shard files " +
                $"{Names(expected)}, the file list names {(listed.Count == 0 ? "none" : Names(listed))}; the manifest is inconsistent, use an older checkpoint");
        return manifest;
    }

    static string Names(IEnumerable<string> names)
    {
        var sorted = names.Order(StringComparer.Ordinal).ToList();
        return string.Join(", ", sorted.Take(3)) + (sorted.Count > 3 ? $", ... ({sorted.Count})" : "");
    }

    static CheckpointException NoLatest(CheckpointOptions options) =>
        new($"{options.Dir}: no latest checkpoint to resume from (checkpoint.dir); train without checkpoint.resume first");

    /// <summary>The manifest's extra key naming the run directory that wrote the checkpoint (a resume continues it).</summary>
    public const string RunDirectoryKey = "run_dir";

    internal static string LayoutJson(FlatParameters flat) => JsonSerializer.Serialize(flat.Layout.Select(l => new { l.Name, l.Offset, l.Shape }));

    /// <summary>
    /// The model of a checkpoint, for export, scoring and evaluation: its config from the manifest,
    /// its weights from the fp32 master slices (verified first: <see cref="Verified"/>), in fp32 on the CPU.
    /// Also returns the resolved training config tree it was trained with.
    /// </summary>
    public static (LanguageModel Model, Dictionary<string, object?> Config, CheckpointManifest Manifest) LoadModel(string checkpoint)
    {
        var dir = Path.GetFullPath(checkpoint);
        var manifest = Verified(dir);
        var tree = YamlTree.Parse(manifest.Config, $"{dir}/manifest.json");
        var model = new LanguageModel(TrainConfigLoader.ModelFromTree(tree, $"{dir}/manifest.json"));
        using var flat = new FlatParameters(model, ScalarType.Float32, CPU);
        long count = (long)manifest.Scalars["flat_count"];
        if (count != flat.Count) throw new CheckpointException($"{dir}: {count:N0} flat parameters, its own config builds {flat.Count:N0}; the checkpoint is inconsistent");
        ReadSlices(dir, manifest, [("master", flat.Master)]);
        // the parameters now live in flat's buffer; detach them from it so the model outlives it
        // the scope keeps each clone's handle alive through set_ (a collection could otherwise free it mid-call)
        var parameters = model.parameters().ToList();
        using (no_grad())
        using (NewDisposeScope())
            foreach (var p in parameters)
                p.set_(p.detach().clone());
        return (model, tree, manifest);
    }

    /// <summary>Only the fp32 master weights of a verified checkpoint, into <paramref name="master"/> (checkpoint.init_from).</summary>
    internal static void ReadMaster(string dir, CheckpointManifest manifest, Tensor master) => ReadSlices(dir, manifest, [("master", master)]);

    /// <summary>Reassembles flat buffers from the slices of every shard file, whatever world size wrote them.</summary>
    static void ReadSlices(string dir, CheckpointManifest manifest, IReadOnlyList<(string Name, Tensor Target)> buffers)
    {
        long count = (long)manifest.Scalars["flat_count"];
        using var noGrad = no_grad();
        using var views = NewDisposeScope();   // keeps each narrow view reachable while copy_ reads it (see CheckpointSaver.Begin)
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

    internal static string ShardName(int rank, int world) => $"shard-{rank:D5}-of-{world:D5}.safetensors";

    /// <summary>Rank r's contiguous slice of a flat buffer of <paramref name="count"/> values.</summary>
    internal static (long Start, long Count) Slice(long count, int rank, int world) => (count * rank / world, count * (rank + 1) / world - count * rank / world);
}
