using System.Text.Json;
using DistTrain.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Checkpoint.Tests;

public class HfExportTests
{
    static ModelConfig Tiny(Architecture arch) =>
        new() { Arch = arch, VocabSize = 48, BlockSize = 32, Dim = 32, NLayer = 3, NHead = 4, IntermediateSize = 256, UseQkNorm = arch == Architecture.MUDDFormer };

    static LanguageModel Build(ModelConfig config)
    {
        manual_seed(7);
        var model = new LanguageModel(config);
        using (no_grad())
            foreach (var (_, p) in model.named_parameters()) p.add_(randn_like(p) * 0.1);   // zero-initialised parts carry values too
        return model;
    }

    [Fact]
    public void MuddFormerExportHasTheOfficialConfigAndEveryParameter()
    {
        using var dir = new TempDir();
        using var model = Build(Tiny(Architecture.MUDDFormer));
        string outDir = dir.File("hf");
        HfExport.Write(model, outDir, ScalarType.Float32);

        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")));
        var c = config.RootElement;
        Assert.Equal(["MUDDFormer"], c.GetProperty("architectures").EnumerateArray().Select(x => x.GetString()));
        var expected = new Dictionary<string, object>
        {
            ["model_type"] = "muddformer", ["block_size"] = 32, ["vocab_size"] = 48, ["n_layer"] = 3, ["n_head"] = 4, ["dim"] = 32,
            ["intermediate_size"] = 256, ["n_local_heads"] = 4, ["head_dim"] = 8, ["rope_base"] = 10000.0, ["norm_eps"] = 1e-6,
            ["use_qk_norm"] = true, ["dense"] = true, ["dynamic_dense"] = true, ["sepln"] = true, ["dense_type"] = "qkvr",
            ["expand_last"] = true, ["round64"] = true, ["stack_hidden"] = false, ["use_layer_cache"] = true,
            ["use_gradient_checkpointing"] = false, ["is_training"] = false, ["bos_token_id"] = 1, ["eos_token_id"] = 2,
            ["tie_word_embeddings"] = false, ["torch_dtype"] = "float32",
        };
        foreach (var (key, value) in expected)
        {
            var actual = c.GetProperty(key);
            object read = value switch
            {
                string => actual.GetString()!,
                bool => actual.GetBoolean(),
                int => actual.GetInt32(),
                _ => actual.GetDouble(),
            };
            Assert.True(value.Equals(read), $"{key}: expected {value}, got {actual}");
        }
        Assert.Equal(expected.Count + 1, c.EnumerateObject().Count());
        Assert.False(c.TryGetProperty("disttrain_arch", out _));

        var file = Safetensors.Open(Path.Combine(outDir, "model.safetensors"));
        var parameters = model.named_parameters().ToList();
        Assert.Equal(parameters.Select(p => p.name), file.Entries.Select(e => e.Name));
        Assert.Contains("dense_bs.0", file.Entries.Select(e => e.Name));
        Assert.Contains("dynamic_dense.2.w2.weight", file.Entries.Select(e => e.Name));
        Assert.Contains("layers.1.attention_norms.0.weight", file.Entries.Select(e => e.Name));
        foreach (var (name, p) in parameters)
        {
            var entry = file[name];
            Assert.Equal("F32", entry.Dtype);
            Assert.Equal(p.shape, entry.Shape);
            using var read = file.Read(name);
            Assert.Equal(p.detach().contiguous().data<float>().ToArray(), read.data<float>().ToArray());
        }
    }

    [Fact]
    public void Bf16ExportConvertsEveryParameter()
    {
        using var dir = new TempDir();
        using var model = Build(Tiny(Architecture.MUDDFormer));
        string outDir = dir.File("hf");
        HfExport.Write(model, outDir, ScalarType.BFloat16);

        Assert.Contains("\"torch_dtype\": \"bfloat16\"", File.ReadAllText(Path.Combine(outDir, "config.json")));
        var file = Safetensors.Open(Path.Combine(outDir, "model.safetensors"));
        Assert.All(file.Entries, e => Assert.Equal("BF16", e.Dtype));
        var (name, p) = model.named_parameters().First(x => x.name == "dynamic_dense.2.w2.weight");
        using var read = file.Read(name);
        using var expected = p.detach().to(ScalarType.BFloat16);
        Assert.Equal(expected.bytes.ToArray(), read.bytes.ToArray());
    }

    [Theory]
    [InlineData(Architecture.TransformerPP, "MUDDFormer", "transformer++")]
    [InlineData(Architecture.DenseFormer, "DenseFormer", "denseformer")]
    public void BaselinesAreMarkedWithTheirArchitecture(Architecture arch, string architectures, string disttrainArch)
    {
        using var dir = new TempDir();
        using var model = Build(Tiny(arch) with { DwaPeriod = 2 });
        string outDir = dir.File("hf");
        HfExport.Write(model, outDir, ScalarType.Float32);

        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")));
        var c = config.RootElement;
        Assert.Equal(architectures, c.GetProperty("architectures")[0].GetString());
        Assert.Equal(disttrainArch, c.GetProperty("disttrain_arch").GetString());
        Assert.False(c.GetProperty("dense").GetBoolean());
        Assert.False(c.GetProperty("dynamic_dense").GetBoolean());
        Assert.Equal(arch == Architecture.DenseFormer, c.TryGetProperty("dwa_period", out var period));
        if (arch == Architecture.DenseFormer) Assert.Equal(2, period.GetInt32());
        Assert.Equal(model.named_parameters().Select(p => p.name), Safetensors.Open(Path.Combine(outDir, "model.safetensors")).Entries.Select(e => e.Name));
    }

    [Fact]
    public void ANonEmptyOutputFolderIsRefused()
    {
        using var dir = new TempDir();
        using var model = Build(Tiny(Architecture.TransformerPP));
        File.WriteAllText(dir.File("keep.txt"), "x");
        var e = Assert.Throws<CheckpointException>(() => HfExport.Write(model, dir.Path, ScalarType.Float32));
        Assert.StartsWith($"{dir.Path}: exists and is not empty", e.Message);
        Assert.Equal(["keep.txt"], Directory.EnumerateFileSystemEntries(dir.Path).Select(Path.GetFileName));
    }
}
