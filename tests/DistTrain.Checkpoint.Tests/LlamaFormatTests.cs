using System.Text.Json;
using System.Text.Json.Nodes;
using DistTrain.Model;
using static TorchSharp.torch;

namespace DistTrain.Checkpoint.Tests;

/// <summary>Transformer++ as transformers' LlamaForCausalLM / Qwen3ForCausalLM: names, config, refusals, and back (import).</summary>
public class LlamaFormatTests
{
    static ModelConfig Tiny(bool qkNorm = false) => new()
    {
        Arch = Architecture.TransformerPP, VocabSize = 48, BlockSize = 32, Dim = 32, NLayer = 3, NHead = 4, IntermediateSize = 96,
        UseQkNorm = qkNorm, RotaryPrecision = RotaryPrecision.Fp32, NormEps = 1e-5, RopeBase = 500,
    };

    static LanguageModel Build(ModelConfig config)
    {
        manual_seed(11);
        var model = new LanguageModel(config);
        using (no_grad())
            foreach (var (_, p) in model.named_parameters()) p.add_(randn_like(p) * 0.1);   // norms carry values too
        return model;
    }

    static Tensor Logits(LanguageModel model)
    {
        manual_seed(3);
        using var ids = randint(0, model.Config.VocabSize, [2, 20]);
        using var noGrad = no_grad();
        model.eval();
        return model.forward(ids);
    }

    static string Export(TempDir dir, LanguageModel model, ScalarType dtype = ScalarType.Float32, string name = "llama")
    {
        var outDir = dir.File(name);
        LlamaFormat.Write(model, outDir, dtype, eosTokenId: 7);
        return outDir;
    }

    [Fact]
    public void ExportHasTransformersLlamaNamesConfigAndUnpermutedQkRows()
    {
        using var dir = new TempDir();
        using var model = Build(Tiny());
        var outDir = Export(dir, model);

        var file = Safetensors.Open(Path.Combine(outDir, "model.safetensors"));
        var expected = new List<string> { "model.embed_tokens.weight" };
        for (int i = 0; i < 3; i++)
            expected.AddRange(new[] { "q_proj", "k_proj", "v_proj", "o_proj" }.Select(p => $"model.layers.{i}.self_attn.{p}.weight")
                .Concat(new[] { "gate_proj", "up_proj", "down_proj" }.Select(p => $"model.layers.{i}.mlp.{p}.weight"))
                .Append($"model.layers.{i}.input_layernorm.weight").Append($"model.layers.{i}.post_attention_layernorm.weight"));
        expected.AddRange(["model.norm.weight", "lm_head.weight"]);
        Assert.Equal(expected, file.Entries.Select(e => e.Name));

        var ours = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using var q = file.Read("model.layers.1.self_attn.q_proj.weight");
        using var k = file.Read("model.layers.1.self_attn.k_proj.weight");
        using var v = file.Read("model.layers.1.self_attn.v_proj.weight");
        using var wqkv = ours["layers.1.attention.wqkv.weight"].detach();
        Assert.Equal([32L, 32L], q.shape);
        Assert.True(Same(cat([q, k, v], 0), wqkv));   // row blocks of wqkv, no rotary permutation
        using var gate = file.Read("model.layers.2.mlp.gate_proj.weight");
        using var up = file.Read("model.layers.2.mlp.up_proj.weight");
        Assert.True(Same(gate, ours["layers.2.feed_forward.w1.weight"].detach()));
        Assert.True(Same(up, ours["layers.2.feed_forward.w3.weight"].detach()));

        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")));
        var c = config.RootElement;
        Assert.Equal("LlamaForCausalLM", c.GetProperty("architectures")[0].GetString());
        Assert.Equal("llama", c.GetProperty("model_type").GetString());
        var ints = new Dictionary<string, int>
        {
            ["vocab_size"] = 48, ["hidden_size"] = 32, ["intermediate_size"] = 96, ["num_hidden_layers"] = 3, ["num_attention_heads"] = 4,
            ["num_key_value_heads"] = 4, ["head_dim"] = 8, ["max_position_embeddings"] = 32, ["bos_token_id"] = 7, ["eos_token_id"] = 7,
        };
        foreach (var (key, value) in ints) Assert.True(c.GetProperty(key).GetInt32() == value, key);
        Assert.Equal(1e-5, c.GetProperty("rms_norm_eps").GetDouble());
        Assert.Equal(500, c.GetProperty("rope_theta").GetDouble());
        Assert.Equal("500.0", c.GetProperty("rope_theta").GetRawText());   // a float for Python
        Assert.Equal(JsonValueKind.Null, c.GetProperty("rope_scaling").ValueKind);
        Assert.False(c.GetProperty("tie_word_embeddings").GetBoolean());
        Assert.False(c.GetProperty("attention_bias").GetBoolean());
        Assert.False(c.GetProperty("mlp_bias").GetBoolean());
        Assert.Equal("silu", c.GetProperty("hidden_act").GetString());
        Assert.Equal("float32", c.GetProperty("torch_dtype").GetString());
        Assert.Equal("fp32", c.GetProperty("disttrain_rotary_precision").GetString());
    }

    [Fact]
    public void QkNormExportsAsQwen3WithItsNormNames()
    {
        using var dir = new TempDir();
        using var model = Build(Tiny(qkNorm: true));
        var outDir = Export(dir, model);
        var names = Safetensors.Open(Path.Combine(outDir, "model.safetensors")).Entries.Select(e => e.Name).ToList();
        Assert.Contains("model.layers.0.self_attn.q_norm.weight", names);
        Assert.Contains("model.layers.2.self_attn.k_norm.weight", names);
        var c = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")))!;
        Assert.Equal("Qwen3ForCausalLM", c["architectures"]![0]!.GetValue<string>());
        Assert.Equal("qwen3", c["model_type"]!.GetValue<string>());
        Assert.False(c["use_sliding_window"]!.GetValue<bool>());
    }

    [Theory]
    [InlineData(Architecture.MUDDFormer, null, "model.arch: muddformer has no Llama form", "--format hf")]
    [InlineData(Architecture.DenseFormer, null, "model.arch: denseformer has no Llama form", "--format hf")]
    [InlineData(Architecture.TransformerPP, true, "model.ffn_scale_with_layer: true gives every layer its own FFN width (128..384)", "needs ffn_scale_with_layer=false")]
    public void ConfigsWithoutALlamaFormAreRefusedByKey(Architecture arch, bool? scale, string key, string fix)
    {
        using var dir = new TempDir();
        using var model = Build(Tiny() with { Arch = arch, FfnScaleWithLayer = scale, IntermediateSize = 256 });
        var outDir = dir.File("llama");
        var e = Assert.Throws<CheckpointException>(() => LlamaFormat.Write(model, outDir, ScalarType.Float32, null));
        Assert.StartsWith("--format llama: " + key, e.Message);
        Assert.Contains(fix, e.Message);
        Assert.False(Directory.Exists(outDir));   // nothing written
    }

    [Theory]
    [InlineData(false, ScalarType.Float32)]
    [InlineData(true, ScalarType.Float32)]
    [InlineData(false, ScalarType.BFloat16)]
    [InlineData(false, ScalarType.Float16)]
    public void ReadGivesBackTheSameModel(bool qkNorm, ScalarType dtype)
    {
        using var dir = new TempDir();
        using var model = Build(Tiny(qkNorm) with { RotaryPrecision = RotaryPrecision.Bf16 });
        var outDir = Export(dir, model, dtype);
        using var read = LlamaFormat.Read(outDir);

        Assert.Equal(model.Config with { FfnScaleWithLayer = false }, read.Config);   // bf16 tables come back from disttrain_rotary_precision
        var theirs = read.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in model.named_parameters())
        {
            using var expected = p.detach().to(dtype).to(ScalarType.Float32);
            Assert.True(Same(theirs[name].detach(), expected), name);
        }
        if (dtype == ScalarType.Float32)
        {
            using var a = Logits(model);
            using var b = Logits(read);
            Assert.True(Same(a, b));
        }
    }

    [Fact]
    public void ShardedWeightsWithAnIndexAndTiedEmbeddingsAreRead()
    {
        using var dir = new TempDir();
        using var model = Build(Tiny());
        var outDir = Export(dir, model);
        // as save_pretrained writes a large model: model-0000K-of-00002.safetensors and the index; tied: no lm_head
        var file = Safetensors.Open(Path.Combine(outDir, "model.safetensors"));
        var names = file.Entries.Select(e => e.Name).Where(n => n != "lm_head.weight").ToList();
        var map = new JsonObject();
        for (int s = 0; s < 2; s++)
        {
            var shard = $"model-{s + 1:D5}-of-00002.safetensors";
            var part = names.Where((_, i) => i % 2 == s).ToList();
            Safetensors.Write(Path.Combine(outDir, shard), part.Select(n => (n, file.Read(n))).ToList());
            foreach (var n in part) map[n] = shard;
        }
        File.Delete(Path.Combine(outDir, "model.safetensors"));
        File.WriteAllText(Path.Combine(outDir, "model.safetensors.index.json"), new JsonObject { ["metadata"] = new JsonObject(), ["weight_map"] = map }.ToJsonString());
        EditConfig(outDir, c => c["tie_word_embeddings"] = true);

        using var read = LlamaFormat.Read(outDir);
        var p = read.named_parameters().ToDictionary(x => x.name, x => x.parameter);
        Assert.True(Same(p["output.weight"], p["tok_embeddings.weight"]));
        Assert.True(Same(p["layers.2.attention.wqkv.weight"], model.named_parameters().First(x => x.name == "layers.2.attention.wqkv.weight").parameter));
        Assert.Equal(RotaryPrecision.Fp32, read.Config.RotaryPrecision);
    }

    [Fact]
    public void AConfigJsonWithoutOurKeyGetsFp32RotaryTablesAsTransformers()
    {
        using var dir = new TempDir();
        using var model = Build(Tiny() with { RotaryPrecision = RotaryPrecision.Bf16 });
        var outDir = Export(dir, model);
        EditConfig(outDir, c =>
        {
            c.Remove("disttrain_rotary_precision");
            c.Remove("rope_theta");
            c["rope_parameters"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 500.0 };   // as transformers 5 writes it
            c["rope_scaling"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 500.0 };      // and may show under the old name
        });
        var config = LlamaFormat.ModelConfigFrom(Path.Combine(outDir, "config.json"), out _);
        Assert.Equal(RotaryPrecision.Fp32, config.RotaryPrecision);
        Assert.Equal(500, config.RopeBase);
    }

    public static TheoryData<string, string, string> BadConfigs => new()
    {
        { "architectures", "[\"MistralForCausalLM\"]", "config.json: architectures: MistralForCausalLM is not supported; import --format llama reads LlamaForCausalLM and Qwen3ForCausalLM checkpoints" },
        { "rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8.0}", "config.json: rope_scaling: {\"rope_type\":\"llama3\",\"factor\":8.0}; DistTrain computes plain rotary only" },
        { "rope_parameters", "{\"rope_type\": \"yarn\", \"rope_theta\": 10000.0}", "config.json: rope_parameters: {\"rope_type\":\"yarn\",\"rope_theta\":10000.0}; DistTrain computes plain rotary only" },
        { "num_key_value_heads", "2", "config.json: num_key_value_heads: 2, num_attention_heads is 4: grouped-query attention is not supported by DistTrain yet" },
        { "attention_bias", "true", "config.json: attention_bias: true; DistTrain's attention has no biases" },
        { "mlp_bias", "true", "config.json: mlp_bias: true; DistTrain's SwiGLU has no biases" },
        { "hidden_act", "\"gelu\"", "config.json: hidden_act: 'gelu'; DistTrain's FFN is SwiGLU (silu)" },
        { "head_dim", "16", "config.json: head_dim: 16; DistTrain's head_dim is hidden_size / num_attention_heads = 8" },
        { "hidden_size", "null", "config.json: hidden_size: missing; a Llama config.json names it" },
    };

    [Theory]
    [MemberData(nameof(BadConfigs))]
    public void WhatDistTrainCannotComputeIsRefusedByField(string key, string value, string message)
    {
        using var dir = new TempDir();
        using var model = Build(Tiny());
        var outDir = Export(dir, model);
        EditConfig(outDir, c => { if (value == "null") c.Remove(key); else c[key] = JsonNode.Parse(value); });
        var e = Assert.Throws<CheckpointException>(() => LlamaFormat.Read(outDir));
        Assert.StartsWith(Path.Combine(outDir, message), e.Message);
    }

    [Fact]
    public void MissingFilesAndTensorsAreNamed()
    {
        using var dir = new TempDir();
        using var model = Build(Tiny());
        var outDir = Export(dir, model);

        var noWeights = dir.File("no-weights");
        Directory.CreateDirectory(noWeights);
        File.Copy(Path.Combine(outDir, "config.json"), Path.Combine(noWeights, "config.json"));
        var e = Assert.Throws<CheckpointException>(() => LlamaFormat.Read(noWeights));
        Assert.StartsWith($"{noWeights}/model.safetensors: not found (nor model.safetensors.index.json for sharded weights)", e.Message);

        File.Delete(Path.Combine(noWeights, "config.json"));
        e = Assert.Throws<CheckpointException>(() => LlamaFormat.Read(noWeights));
        Assert.StartsWith($"{noWeights}/config.json: not found; import --format llama reads a folder with config.json and model.safetensors", e.Message);

        // drop one tensor, add a foreign one
        var file = Safetensors.Open(Path.Combine(outDir, "model.safetensors"));
        var kept = file.Entries.Select(x => x.Name).Where(n => n != "model.layers.1.mlp.up_proj.weight").Select(n => (n, file.Read(n))).ToList();
        var missing = dir.File("missing");
        Directory.CreateDirectory(missing);
        File.Copy(Path.Combine(outDir, "config.json"), Path.Combine(missing, "config.json"));
        Safetensors.Write(Path.Combine(missing, "model.safetensors"), kept);
        e = Assert.Throws<CheckpointException>(() => LlamaFormat.Read(missing));
        Assert.StartsWith($"{missing}/model.safetensors: tensor 'model.layers.1.mlp.up_proj.weight' missing; a LlamaForCausalLM with num_hidden_layers 3 needs it", e.Message);

        var extra = dir.File("extra");
        Directory.CreateDirectory(extra);
        File.Copy(Path.Combine(outDir, "config.json"), Path.Combine(extra, "config.json"));
        Safetensors.Write(Path.Combine(extra, "model.safetensors"), [.. file.Entries.Select(x => (x.Name, file.Read(x.Name))), ("model.layers.0.self_attn.q_proj.bias", zeros(32))]);
        e = Assert.Throws<CheckpointException>(() => LlamaFormat.Read(extra));
        Assert.StartsWith($"{extra}/model.safetensors: tensor 'model.layers.0.self_attn.q_proj.bias' is not part of a LlamaForCausalLM with this config.json", e.Message);
    }

    static void EditConfig(string dir, Action<JsonObject> edit)
    {
        var path = Path.Combine(dir, "config.json");
        var c = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(c);
        File.WriteAllText(path, c.ToJsonString());
    }

    /// <summary>Same shape and every value equal (bitwise for finite floats).</summary>
    static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();
}
