using System.Globalization;
using System.Text.Json;
using DistTrain.Checkpoint;
using DistTrain.Model;
using DistTrain.Training.Config;
using DistTrain.Training.Optim;
using static TorchSharp.torch;

namespace DistTrain.Training.Checkpointing;

/// <summary>
/// Checkpoints that hold weights only: what `disttrain import` writes (step 0, zero AdamW moments, no data
/// position), and how a run starts from any checkpoint's weights (checkpoint.init_from: fresh optimizer, step 0).
/// The folder is an ordinary one-shard checkpoint, so score, eval, generate, export and ckpt inspect read it.
/// </summary>
public static class WeightsCheckpoint
{
    /// <summary>The manifest's extra key that marks an imported checkpoint (its value: the folder it came from).</summary>
    public const string ImportedFromKey = "imported_from";

    /// <summary>
    /// Writes <paramref name="model"/> (fp32, CPU) as a checkpoint folder <paramref name="outDir"/> (must not exist):
    /// written into a temporary sibling folder, fsynced, renamed. Its config holds only the model section.
    /// </summary>
    public static void Write(LanguageModel model, string outDir, string importedFrom, string? tokenizer)
    {
        outDir = Path.GetFullPath(outDir.TrimEnd('/'));
        if (Directory.Exists(outDir) || File.Exists(outDir))
            throw new CheckpointException($"{outDir}: exists; import into a new folder (nothing is overwritten)");
        var parent = Path.GetDirectoryName(outDir)!;
        Directory.CreateDirectory(parent);
        var temp = Path.Combine(parent, $".tmp-import-{Path.GetFileName(outDir)}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temp);
        try
        {
            var tree = new Dictionary<string, object?> { ["model"] = ModelSection(model.Config) };
            using var flat = new FlatParameters(model, ScalarType.Float32, CPU);
            string shard = TrainingCheckpoint.ShardName(0, 1);
            using (var zeros = zeros_like(flat.Master))
                Safetensors.Write(Path.Combine(temp, shard), [("master", flat.Master), ("exp_avg", zeros), ("exp_avg_sq", zeros)],
                    new Dictionary<string, string> { ["flat_start"] = "0", ["flat_count"] = $"{flat.Count}" });
            var files = new List<ManifestFile> { ManifestFile.Of(temp, shard) };
            var extra = new Dictionary<string, string> { ["layout"] = TrainingCheckpoint.LayoutJson(flat), [ImportedFromKey] = importedFrom };
            if (tokenizer is not null) extra[RunTokenizer.ManifestKey] = tokenizer;
            new CheckpointManifest
            {
                Step = 0, Tokens = 0, WorldSize = 1,
                Config = YamlTree.Write(tree), ModelConfig = HfExport.ConfigJson(model.Config, ScalarType.Float32),
                DataCursors = JsonSerializer.Serialize(new { shards = 0, cursors = new Dictionary<string, string>() }),
                Scalars = new() { ["adam_steps"] = 0, ["first_non_finite"] = -1, ["flat_count"] = flat.Count },
                Extra = extra,
                Files = files,
                Tensors = ManifestTensor.Of(shard, Safetensors.Open(Path.Combine(temp, shard))).ToList(),
            }.Write(temp);
            CheckpointDirectory.Commit(temp, outDir);
        }
        catch
        {
            try { if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true); }
            catch (IOException) { }   // best effort: the error that got us here matters more
            throw;
        }
    }

    /// <summary>The model section of a config tree (YAML scalars as text, as <see cref="YamlTree"/> holds them).</summary>
    public static Dictionary<string, object?> ModelSection(ModelConfig m)
    {
        string D(double v) => v.ToString("R", CultureInfo.InvariantCulture);
        string B(bool v) => v ? "true" : "false";
        var section = new Dictionary<string, object?>
        {
            ["arch"] = m.Arch switch { Architecture.MUDDFormer => "muddformer", Architecture.DenseFormer => "denseformer", _ => "transformer++" },
            ["vocab_size"] = $"{m.VocabSize}", ["block_size"] = $"{m.BlockSize}", ["dim"] = $"{m.Dim}", ["n_layer"] = $"{m.NLayer}",
            ["n_head"] = $"{m.NHead}", ["intermediate_size"] = $"{m.BaseIntermediateSize}", ["rope_base"] = D(m.RopeBase), ["norm_eps"] = D(m.NormEps),
            ["use_qk_norm"] = B(m.UseQkNorm), ["ffn_scale_with_layer"] = B(m.ScalesFfnWithLayer),
            ["rotary_precision"] = TrainConfigLoader.Name(m.RotaryPrecision),
        };
        return section;
    }

    /// <summary>
    /// checkpoint.init_from: the master weights of the checkpoint in <paramref name="path"/> into <paramref name="flat"/>
    /// (verified first); the optimizer, the step and the data position stay fresh. The checkpoint must hold this config's
    /// model: otherwise the message names every model key that differs and the checkpoint's value.
    /// </summary>
    public static CheckpointManifest LoadInto(string path, FlatParameters flat, ModelConfig model, string source)
    {
        var dir = Path.GetFullPath(path);
        CheckpointManifest manifest;
        try { manifest = TrainingCheckpoint.Verified(dir); }
        catch (CheckpointException e) { throw new CheckpointException($"checkpoint.init_from: {e.Message}"); }
        if (manifest.Extra.GetValueOrDefault("layout") != TrainingCheckpoint.LayoutJson(flat))
        {
            var theirs = TrainConfigLoader.ModelFromTree(YamlTree.Parse(manifest.Config, $"{dir}/manifest.json"), $"{dir}/manifest.json");
            var (a, b) = (ModelSection(theirs), ModelSection(model));
            var differ = a.Keys.Where(k => !Equals(a[k], b[k])).Select(k => $"model.{k}={a[k]} (this config: {b[k]})").ToList();
            throw new CheckpointException($"{source}: checkpoint.init_from: {dir} holds another model" +
                (differ.Count > 0 ? $"; set {string.Join(", ", differ)}" : " (its parameters are laid out differently); train with the model section it was saved with"));
        }
        TrainingCheckpoint.ReadMaster(dir, manifest, flat.Master);
        flat.PublishMaster();
        return manifest;
    }

    /// <summary>Whether the checkpoint was written by import (weights only).</summary>
    public static bool IsImported(CheckpointManifest manifest) => manifest.Extra.ContainsKey(ImportedFromKey);
}
