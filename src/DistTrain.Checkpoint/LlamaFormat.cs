using System.Text.Json;
using System.Text.Json.Nodes;
using DistTrain.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Checkpoint;

/// <summary>
/// Transformer++ as transformers' LlamaForCausalLM (or Qwen3ForCausalLM when it has QK-norm): config.json and
/// model.safetensors under transformers' names, both ways. One mapping serves export and import:
/// <list type="table">
/// <item><c>tok_embeddings.weight</c> ↔ <c>model.embed_tokens.weight</c></item>
/// <item><c>layers.{i}.attention.wqkv.weight</c> (3·H·d, D) ↔ <c>model.layers.{i}.self_attn.{q,k,v}_proj.weight</c> (its three row blocks)</item>
/// <item><c>layers.{i}.attention.wo.weight</c> ↔ <c>model.layers.{i}.self_attn.o_proj.weight</c></item>
/// <item><c>layers.{i}.attention.{q,k}_norm.weight</c> ↔ <c>model.layers.{i}.self_attn.{q,k}_norm.weight</c> (Qwen3)</item>
/// <item><c>layers.{i}.feed_forward.{w1,w3,w2}.weight</c> ↔ <c>model.layers.{i}.mlp.{gate,up,down}_proj.weight</c></item>
/// <item><c>layers.{i}.attention_norm.weight</c>, <c>ffn_norm.weight</c> ↔ <c>input_layernorm.weight</c>, <c>post_attention_layernorm.weight</c></item>
/// <item><c>norm.weight</c> ↔ <c>model.norm.weight</c>; <c>output.weight</c> ↔ <c>lm_head.weight</c></item>
/// </list>
/// The q/k rows need no rotary permutation: our rotary pairs x[i] with x[i + d/2] as Llama's rotate_half does
/// (<see cref="DistTrain.Model.Layers.Rotary"/>); only the order of the rotated outputs differs, the same for q
/// and k, which q·k does not see. (transformers' convert_llama_weights_to_hf.py permutes because Meta's
/// checkpoints pair x[2i] with x[2i+1].)
/// </summary>
public static class LlamaFormat
{
    public const string ConfigFileName = "config.json";
    public const string WeightsFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";
    /// <summary>Our own config.json key: the rotary table precision the weights were trained with (transformers ignores it; import restores it).</summary>
    public const string RotaryPrecisionKey = "disttrain_rotary_precision";

    static readonly string[] Architectures = ["LlamaForCausalLM", "Qwen3ForCausalLM"];

    /// <summary>Why <paramref name="config"/> has no exact Llama (or Qwen3) form: one message per config key; empty when it has one.</summary>
    public static IReadOnlyList<string> Refusals(ModelConfig config)
    {
        if (config.Arch == Architecture.MUDDFormer)
            return ["model.arch: muddformer has no Llama form (its dynamic dense connections mix every earlier layer's output into Q, K, V and the residual); " +
                    "export it with --format hf (the official MUDDFormer layout, loaded by Caiyun-AI/MUDDFormer's modeling_muddformer.py)"];
        if (config.Arch == Architecture.DenseFormer)
            return ["model.arch: denseformer has no Llama form (its depth-weighted averages mix every earlier block's output); " +
                    "export it with --format hf (config.json + model.safetensors under DistTrain's own names, docs/model-zoo.md)"];
        var refusals = new List<string>();
        if (config.ScalesFfnWithLayer)
            refusals.Add($"model.ffn_scale_with_layer: true gives every layer its own FFN width ({config.FfnWidth(0)}..{config.FfnWidth(config.NLayer - 1)}); " +
                         "Llama has one intermediate_size for all layers: this needs ffn_scale_with_layer=false");
        if (config.LocalHeads != config.NHead)
            refusals.Add($"model.n_local_heads: {config.NLocalHeads}; the export needs n_local_heads=-1 (= n_head)");
        return refusals;
    }

    /// <summary>The transformers architecture a Transformer++ config exports as: Qwen3ForCausalLM with QK-norm, LlamaForCausalLM without.</summary>
    public static string ArchitectureOf(ModelConfig config) => config.UseQkNorm ? "Qwen3ForCausalLM" : "LlamaForCausalLM";

    /// <summary>
    /// Writes outDir/config.json and outDir/model.safetensors (parameters converted to dtype). Refuses a config
    /// without an exact Llama form (<see cref="Refusals"/>). eosTokenId: the run's end-of-text id, when known.
    /// </summary>
    public static void Write(LanguageModel model, string outDir, ScalarType dtype, int? eosTokenId)
    {
        var refusals = Refusals(model.Config);
        if (refusals.Count > 0) throw new CheckpointException($"--format llama: {string.Join("; ", refusals)}");
        if (dtype is not (ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float32))
            throw new ArgumentException($"export dtype {dtype} is not supported; use bf16, fp16 or fp32", nameof(dtype));
        HfExport.PrepareFolder(outDir);
        using (var scope = NewDisposeScope())
        {
            var ours = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach());
            var tensors = ToLlama(model.Config, ours).Select(p => (p.Name, p.Tensor.to(dtype, CPU).contiguous())).ToList();
            Safetensors.Write(Path.Combine(outDir, WeightsFileName), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        }
        using var file = new FileStream(Path.Combine(outDir, ConfigFileName), FileMode.Create, FileAccess.Write, FileShare.None);
        JsonSerializer.Serialize(file, ConfigJson(model.Config, dtype, eosTokenId), new JsonSerializerOptions { WriteIndented = true });
        file.Flush(flushToDisk: true);
    }

    /// <summary>Our parameters (by our names) under transformers' names, in transformers' order.</summary>
    public static IEnumerable<(string Name, Tensor Tensor)> ToLlama(ModelConfig config, IReadOnlyDictionary<string, Tensor> ours)
    {
        long inner = (long)config.NHead * config.HeadDim;
        yield return ("model.embed_tokens.weight", ours["tok_embeddings.weight"]);
        for (int i = 0; i < config.NLayer; i++)
        {
            string l = $"model.layers.{i}.", o = $"layers.{i}.";
            var wqkv = ours[o + "attention.wqkv.weight"];   // (3·H·d, D): rows of q, then k, then v (Attention views it as (3, H, d))
            yield return (l + "self_attn.q_proj.weight", wqkv.narrow(0, 0, inner));
            yield return (l + "self_attn.k_proj.weight", wqkv.narrow(0, inner, inner));
            yield return (l + "self_attn.v_proj.weight", wqkv.narrow(0, 2 * inner, inner));
            yield return (l + "self_attn.o_proj.weight", ours[o + "attention.wo.weight"]);
            if (config.UseQkNorm)
            {
                yield return (l + "self_attn.q_norm.weight", ours[o + "attention.q_norm.weight"]);
                yield return (l + "self_attn.k_norm.weight", ours[o + "attention.k_norm.weight"]);
            }
            yield return (l + "mlp.gate_proj.weight", ours[o + "feed_forward.w1.weight"]);
            yield return (l + "mlp.up_proj.weight", ours[o + "feed_forward.w3.weight"]);
            yield return (l + "mlp.down_proj.weight", ours[o + "feed_forward.w2.weight"]);
            yield return (l + "input_layernorm.weight", ours[o + "attention_norm.weight"]);
            yield return (l + "post_attention_layernorm.weight", ours[o + "ffn_norm.weight"]);
        }
        yield return ("model.norm.weight", ours["norm.weight"]);
        yield return ("lm_head.weight", ours["output.weight"]);
    }

    /// <summary>config.json as transformers writes it for LlamaForCausalLM (Qwen3ForCausalLM with QK-norm).</summary>
    public static JsonObject ConfigJson(ModelConfig config, ScalarType dtype, int? eosTokenId)
    {
        bool qwen3 = config.UseQkNorm;
        var json = new JsonObject
        {
            ["architectures"] = new JsonArray(ArchitectureOf(config)),
            ["model_type"] = qwen3 ? "qwen3" : "llama",
            ["vocab_size"] = config.VocabSize,
            ["hidden_size"] = config.Dim,
            ["intermediate_size"] = config.BaseIntermediateSize,
            ["num_hidden_layers"] = config.NLayer,
            ["num_attention_heads"] = config.NHead,
            ["num_key_value_heads"] = config.LocalHeads,
            ["head_dim"] = config.HeadDim,
            ["hidden_act"] = "silu",
            ["max_position_embeddings"] = config.BlockSize,
            ["rms_norm_eps"] = config.NormEps,
            ["rope_theta"] = FloatLiteral(config.RopeBase),   // 10000.0, not 10000: transformers' rotary expects a float
            ["rope_scaling"] = null,
            ["attention_bias"] = false,
            ["attention_dropout"] = 0.0,
            ["tie_word_embeddings"] = false,
            ["use_cache"] = true,
            ["torch_dtype"] = dtype switch { ScalarType.BFloat16 => "bfloat16", ScalarType.Float16 => "float16", _ => "float32" },
            [RotaryPrecisionKey] = config.RotaryPrecision == RotaryPrecision.Bf16 ? "bf16" : "fp32",
        };
        if (qwen3)
        {
            json["use_sliding_window"] = false;
            json["sliding_window"] = null;
            json["max_window_layers"] = config.NLayer;
        }
        else
        {
            json["mlp_bias"] = false;
            json["pretraining_tp"] = 1;
        }
        if (eosTokenId is int eos)
        {
            // documents are packed with one end-of-text token between them: it ends one and begins the next
            json["bos_token_id"] = eos;
            json["eos_token_id"] = eos;
        }
        return json;
    }

    /// <summary>A JSON number that Python reads as a float (with a decimal point or an exponent).</summary>
    static JsonNode FloatLiteral(double value)
    {
        var text = value.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
        return JsonNode.Parse(text.IndexOfAny(['.', 'E', 'e']) < 0 ? text + ".0" : text)!;
    }

    /// <summary>
    /// Reads a Llama-format folder (config.json and model.safetensors, or the shards that model.safetensors.index.json
    /// lists; bf16, fp16 or fp32) into a Transformer++ model in fp32 on the CPU. Refuses, naming the file and field,
    /// what DistTrain cannot compute exactly: rope scaling, grouped-query attention, biases, another activation.
    /// </summary>
    public static LanguageModel Read(string dir)
    {
        var configPath = Path.Combine(dir, ConfigFileName);
        if (!Directory.Exists(dir))
            throw new CheckpointException($"{dir}: not found; import --format llama reads a folder with config.json and model.safetensors, as transformers' save_pretrained writes it");
        if (!File.Exists(configPath))
            throw new CheckpointException($"{configPath}: not found; import --format llama reads a folder with config.json and model.safetensors, as transformers' save_pretrained writes it");
        var config = ModelConfigFrom(configPath, out bool tied);
        var weights = WeightFiles(dir);

        var model = new LanguageModel(config);
        try
        {
            var ours = model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
            var expected = ToLlama(config, ours).ToList();
            var known = expected.Select(e => e.Name).ToHashSet();
            if (tied) known.Remove("lm_head.weight");
            var unknown = weights.Keys.Where(n => !known.Contains(n) && n != "lm_head.weight" && !n.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList();
            if (unknown.Count > 0)
                throw new CheckpointException($"{weights[unknown[0]].Path}: tensor '{unknown[0]}'{(unknown.Count > 1 ? $" (and {unknown.Count - 1} more)" : "")} is not part of a " +
                    $"{ArchitectureOf(config)} with this config.json; DistTrain would drop it, so the model would not be the same: import a checkpoint without it");
            using var noGrad = no_grad();
            foreach (var (name, target) in expected)
            {
                string source = name == "lm_head.weight" && tied && !weights.ContainsKey(name) ? "model.embed_tokens.weight" : name;
                if (!weights.TryGetValue(source, out var file))
                    throw new CheckpointException($"{(weights.Count > 0 ? DescribeWeights(dir) : dir)}: tensor '{source}' missing; a {ArchitectureOf(config)} with " +
                        $"num_hidden_layers {config.NLayer}{(config.UseQkNorm ? " and QK-norm" : "")} needs it; the checkpoint is incomplete");
                var entry = file[source];
                if (!entry.Shape.SequenceEqual(target.shape))
                    throw new CheckpointException($"{file.Path}: tensor '{source}' has shape [{string.Join(", ", entry.Shape)}], config.json implies [{string.Join(", ", target.shape)}]; the weights do not belong to this config.json");
                if (entry.Dtype is not ("F32" or "BF16" or "F16"))
                    throw new CheckpointException($"{file.Path}: tensor '{source}' is {entry.Dtype}; import reads F32, BF16 or F16 weights");
                using var read = file.Read(source);
                using var f32 = read.to(ScalarType.Float32);   // held until copy_ returns: a collection could otherwise free it mid-call
                target.copy_(f32);                              // target is a view into our parameter (wqkv's row blocks)
            }
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return model;
    }

    /// <summary>The Transformer++ config of a Llama (or Qwen3) config.json; tied: tie_word_embeddings (lm_head copies the embedding).</summary>
    public static ModelConfig ModelConfigFrom(string configPath, out bool tied)
    {
        JsonObject c;
        try { c = JsonNode.Parse(File.ReadAllText(configPath))?.AsObject() ?? throw new CheckpointException($"{configPath}: JSON null, not a config object"); }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new CheckpointException($"{configPath}: not a JSON object ({e.Message}); the file is corrupt");
        }
        CheckpointException Bad(string key, string message) => new($"{configPath}: {key}: {message}");
        JsonNode? Get(string key) => c.TryGetPropertyValue(key, out var v) ? v : null;
        int Int(string key, int? fallback = null)
        {
            var v = Get(key);
            if (v is null) return fallback ?? throw Bad(key, "missing; a Llama config.json names it");
            return v is JsonValue j && j.TryGetValue<int>(out var i) ? i : throw Bad(key, $"{v.ToJsonString()} is not an integer");
        }
        double Double(string key, double fallback)
        {
            var v = Get(key);
            if (v is null) return fallback;
            return v is JsonValue j && j.TryGetValue<double>(out var d) ? d : throw Bad(key, $"{v.ToJsonString()} is not a number");
        }
        bool Bool(string key, bool fallback)
        {
            var v = Get(key);
            if (v is null) return fallback;
            return v is JsonValue j && j.TryGetValue<bool>(out var b) ? b : throw Bad(key, $"{v.ToJsonString()} is not true or false");
        }
        string? String(string key) => Get(key) is JsonValue j && j.TryGetValue<string>(out var s) ? s : null;

        var architectures = Get("architectures") is JsonArray a ? a.Select(x => x?.ToString()).ToList() : [];
        string? modelType = String("model_type");
        string? arch = architectures.FirstOrDefault(x => x is not null && Architectures.Contains(x));
        bool qwen3;
        if (arch is not null) qwen3 = arch == "Qwen3ForCausalLM";
        else if (architectures.Count == 0 && modelType is "llama" or "qwen3") qwen3 = modelType == "qwen3";
        else throw Bad("architectures", $"{(architectures.Count > 0 ? string.Join(", ", architectures) : $"(none; model_type {modelType ?? "missing"})")} is not supported; " +
                       $"import --format llama reads {string.Join(" and ", Architectures)} checkpoints");

        // rope: the plain one only. transformers 4.x writes rope_theta and rope_scaling (null), 5.x rope_parameters
        // ({"rope_type": "default", "rope_theta": ...}, which it may also show under the old name rope_scaling)
        double ropeTheta = Double("rope_theta", 10000);
        foreach (var key in new[] { "rope_scaling", "rope_parameters" })
        {
            if (Get(key) is not { } rope) continue;
            var type = rope is JsonObject o ? o["rope_type"]?.ToString() ?? o["type"]?.ToString() ?? "default" : null;
            if (type != "default")
                throw Bad(key, $"{rope.ToJsonString()}; DistTrain computes plain rotary only (no scaled or extended rope): this needs {key} null or rope_type default");
            if (rope["rope_theta"] is JsonValue t && t.TryGetValue<double>(out var theta)) ropeTheta = theta;
            if (rope["partial_rotary_factor"] is JsonValue p && p.TryGetValue<double>(out var partial) && partial != 1.0)
                throw Bad($"{key}.partial_rotary_factor", $"{partial}; DistTrain rotates the whole head: this needs 1.0");
        }
        if (Get("partial_rotary_factor") is JsonValue pr && pr.TryGetValue<double>(out var prf) && prf != 1.0)
            throw Bad("partial_rotary_factor", $"{prf}; DistTrain rotates the whole head: this needs 1.0");

        int dim = Int("hidden_size"), heads = Int("num_attention_heads"), layers = Int("num_hidden_layers");
        int kvHeads = Int("num_key_value_heads", heads);
        if (kvHeads != heads)
            throw Bad("num_key_value_heads", $"{kvHeads}, num_attention_heads is {heads}: grouped-query attention is not supported by DistTrain yet; this needs num_key_value_heads = num_attention_heads");
        if (heads <= 0 || dim % heads != 0)
            throw Bad("num_attention_heads", $"{heads} does not divide hidden_size {dim}");
        if (Get("head_dim") is not null && Int("head_dim") != dim / heads)
            throw Bad("head_dim", $"{Int("head_dim")}; DistTrain's head_dim is hidden_size / num_attention_heads = {dim / heads}");
        if ((dim / heads) % 2 != 0)
            throw Bad("head_dim", $"{dim / heads} is odd; rotary needs an even head_dim");
        if (Bool("attention_bias", false))
            throw Bad("attention_bias", "true; DistTrain's attention has no biases: this needs attention_bias false");
        if (Bool("mlp_bias", false))
            throw Bad("mlp_bias", "true; DistTrain's SwiGLU has no biases: this needs mlp_bias false");
        var act = String("hidden_act") ?? "silu";
        if (act != "silu")
            throw Bad("hidden_act", $"'{act}'; DistTrain's FFN is SwiGLU (silu): this needs hidden_act silu");
        if (qwen3 && Bool("use_sliding_window", false))
            throw Bad("use_sliding_window", "true; DistTrain attends to every earlier position: this needs use_sliding_window false");
        var precision = String(RotaryPrecisionKey) switch
        {
            null or "fp32" => RotaryPrecision.Fp32,   // transformers computes the tables in fp32
            "bf16" => RotaryPrecision.Bf16,           // exported by DistTrain from a model trained with bf16 tables
            var other => throw Bad(RotaryPrecisionKey, $"'{other}' is not bf16 or fp32"),
        };
        tied = Bool("tie_word_embeddings", false);   // both classes default to untied
        int intermediate = Int("intermediate_size");
        int vocab = Int("vocab_size");
        int positions = Int("max_position_embeddings", 2048);
        foreach (var (key, value) in new[] { ("hidden_size", dim), ("num_hidden_layers", layers), ("intermediate_size", intermediate), ("vocab_size", vocab), ("max_position_embeddings", positions) })
            if (value <= 0) throw Bad(key, $"{value} must be positive");
        return new ModelConfig
        {
            Arch = Architecture.TransformerPP,
            VocabSize = vocab,
            BlockSize = positions,
            Dim = dim,
            NLayer = layers,
            NHead = heads,
            IntermediateSize = intermediate,
            RopeBase = ropeTheta,
            NormEps = Double("rms_norm_eps", 1e-6),
            UseQkNorm = qwen3,
            FfnScaleWithLayer = false,
            RotaryPrecision = precision,
        };
    }

    /// <summary>Every tensor name of the weight files: model.safetensors, or the shards model.safetensors.index.json maps.</summary>
    static Dictionary<string, SafetensorsFile> WeightFiles(string dir)
    {
        var single = Path.Combine(dir, WeightsFileName);
        var indexPath = Path.Combine(dir, IndexFileName);
        var byName = new Dictionary<string, SafetensorsFile>();
        if (File.Exists(single))
        {
            var file = Safetensors.Open(single);
            foreach (var e in file.Entries) byName[e.Name] = file;
            return byName;
        }
        if (!File.Exists(indexPath))
            throw new CheckpointException($"{single}: not found (nor {IndexFileName} for sharded weights); import --format llama reads safetensors weights as transformers' save_pretrained writes them " +
                "(a pytorch_model.bin checkpoint: load and save it again with safe_serialization=True)");
        JsonObject map;
        try { map = JsonNode.Parse(File.ReadAllText(indexPath))?["weight_map"]?.AsObject() ?? throw new CheckpointException($"{indexPath}: weight_map: missing; the index is corrupt"); }
        catch (Exception e) when (e is JsonException or InvalidOperationException) { throw new CheckpointException($"{indexPath}: not a JSON index ({e.Message}); the file is corrupt"); }
        var files = new Dictionary<string, SafetensorsFile>();
        foreach (var (name, value) in map)
        {
            var shard = value?.ToString() ?? throw new CheckpointException($"{indexPath}: weight_map.{name}: null; the index is corrupt");
            if (shard != Path.GetFileName(shard)) throw new CheckpointException($"{indexPath}: weight_map.{name}: '{shard}' is not a file name in {dir}");
            if (!files.TryGetValue(shard, out var file))
                files[shard] = file = Safetensors.Open(Path.Combine(dir, shard));
            if (!file.Contains(name))
                throw new CheckpointException($"{file.Path}: tensor '{name}' missing, though {IndexFileName} places it there; the checkpoint is incomplete");
            byName[name] = file;
        }
        return byName;
    }

    static string DescribeWeights(string dir) =>
        File.Exists(Path.Combine(dir, WeightsFileName)) ? Path.Combine(dir, WeightsFileName) : Path.Combine(dir, IndexFileName);
}
