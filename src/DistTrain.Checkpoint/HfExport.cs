using System.Text.Json;
using System.Text.Json.Nodes;
using DistTrain.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Checkpoint;

/// <summary>
/// Exports a model in the official MUDDFormer Hugging Face layout (Caiyun-AI/MUDDFormer,
/// modeling_muddformer.py): model.safetensors with every parameter under its own name (the names
/// already match) and config.json with the MUDDFormerConfig keys. DenseFormer and Transformer++ get the
/// same file pair under DistTrain's names, marked with disttrain_arch: no Python class loads those (a
/// Transformer++ loads in transformers through <see cref="LlamaFormat"/>; docs/checkpoints.md, Export formats).
/// </summary>
public static class HfExport
{
    public const string WeightsFileName = "model.safetensors";
    public const string ConfigFileName = "config.json";

    /// <summary>Writes outDir/model.safetensors (parameters converted to dtype: BFloat16, Float16 or Float32) and outDir/config.json.</summary>
    public static void Write(LanguageModel model, string outDir, ScalarType dtype)
    {
        if (dtype is not (ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float32))
            throw new ArgumentException($"export dtype {dtype} is not supported; use bf16, fp16 or fp32", nameof(dtype));
        PrepareFolder(outDir);

        using (var scope = NewDisposeScope())
        {
            var tensors = model.named_parameters()
                .Select(p => (p.name, p.parameter.detach().to(dtype, CPU).contiguous()))
                .ToList();
            Safetensors.Write(Path.Combine(outDir, WeightsFileName), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        }
        using var file = new FileStream(Path.Combine(outDir, ConfigFileName), FileMode.Create, FileAccess.Write, FileShare.None);
        JsonSerializer.Serialize(file, ConfigJson(model.Config, dtype), new JsonSerializerOptions { WriteIndented = true });
        file.Flush(flushToDisk: true);
    }

    /// <summary>Creates the export folder; refuses a file or a folder with anything in it (nothing is overwritten).</summary>
    public static void PrepareFolder(string outDir)
    {
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
            throw new CheckpointException($"{outDir}: exists and is not empty; export into a new folder or empty this one first");
        if (File.Exists(outDir))
            throw new CheckpointException($"{outDir}: is a file; export into a new folder");
        Directory.CreateDirectory(outDir);
    }

    /// <summary>The config.json object: official MUDDFormerConfig keys; the baselines add disttrain_arch (and DenseFormer its dwa settings).</summary>
    public static JsonObject ConfigJson(ModelConfig config, ScalarType dtype)
    {
        bool mudd = config.Arch == Architecture.MUDDFormer;
        var json = new JsonObject
        {
            ["architectures"] = new JsonArray(config.Arch == Architecture.DenseFormer ? "DenseFormer" : "MUDDFormer"),
            ["model_type"] = config.Arch == Architecture.DenseFormer ? "denseformer" : "muddformer",
            ["block_size"] = config.BlockSize,
            ["vocab_size"] = config.VocabSize,
            ["n_layer"] = config.NLayer,
            ["n_head"] = config.NHead,
            ["dim"] = config.Dim,
            ["intermediate_size"] = config.BaseIntermediateSize,
            ["n_local_heads"] = config.LocalHeads,
            ["head_dim"] = config.HeadDim,
            ["rope_base"] = config.RopeBase,
            ["norm_eps"] = config.NormEps,
            ["use_qk_norm"] = config.UseQkNorm,
            ["dense"] = mudd,
            ["dynamic_dense"] = mudd,
            ["sepln"] = config.Sepln,
            ["dense_type"] = config.DenseType,
            ["expand_last"] = config.ExpandLast,
            ["round64"] = config.Round64,
            ["stack_hidden"] = false,
            ["use_layer_cache"] = true,
            ["use_gradient_checkpointing"] = false,
            ["is_training"] = false,
            ["bos_token_id"] = 1,
            ["eos_token_id"] = 2,
            ["tie_word_embeddings"] = false,
            ["torch_dtype"] = dtype switch { ScalarType.BFloat16 => "bfloat16", ScalarType.Float16 => "float16", _ => "float32" },
        };
        if (config.Arch == Architecture.TransformerPP)
            json["disttrain_arch"] = "transformer++";
        if (config.Arch == Architecture.DenseFormer)
        {
            json["disttrain_arch"] = "denseformer";
            json["dwa_dilation"] = config.DwaDilation;
            json["dwa_period"] = config.DwaPeriod;
        }
        // The official FeedForward scales width with depth exactly when the model is a MUDDFormer; record an override.
        if (config.FfnScaleWithLayer is bool scale && scale != mudd)
            json["disttrain_ffn_scale_with_layer"] = scale;
        // the official precompute_freqs_cis rounds the tables to bf16; record a model trained with fp32 tables
        if (config.RotaryPrecision == RotaryPrecision.Fp32)
            json[LlamaFormat.RotaryPrecisionKey] = "fp32";
        return json;
    }
}
