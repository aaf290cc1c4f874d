using DistTrain.Checkpoint;
using DistTrain.Model;
using DistTrain.Training.Checkpointing;
using DistTrain.Training.Config;
using static TorchSharp.torch;

namespace DistTrain.Training.Tests;

/// <summary>A Llama folder imported as a checkpoint: score/generate read it, a run starts from it (checkpoint.init_from), a resume is refused.</summary>
public class ImportedWeightsTests
{
    static TrainConfig Tiny(TempDir runs, params string[] overrides) =>
        TrainConfigLoader.Load(Repo.Config("tiny-transformerpp.yaml"),
            ["train.micro_batch=4", "train.seq_len=32", "train.log_interval=1", "train.eval_interval=0", "train.eval_batches=0",
             "optim.warmup_steps=1", "train.steps=2", "checkpoint.interval=0", $"train.run_dir={runs.Path}", .. overrides]);

    /// <summary>A trained-looking tiny Transformer++ exported as Llama and imported back into a checkpoint folder.</summary>
    static (LanguageModel Original, string Checkpoint) Imported(TempDir dir, ModelConfig config)
    {
        manual_seed(5);
        var model = new LanguageModel(config);
        using (no_grad())
            foreach (var (_, p) in model.named_parameters())
            {
                using var noise = randn_like(p).mul_(Scalars.Of(0.05));   // rooted scalar, disposed noise: nothing left for a later test's finalizers
                p.add_(noise);
            }
        var llama = Path.Combine(dir.Path, "llama");
        LlamaFormat.Write(model, llama, ScalarType.Float32, eosTokenId: 256);
        var checkpoint = Path.Combine(dir.Path, "imported");
        using (var read = LlamaFormat.Read(llama)) WeightsCheckpoint.Write(read, checkpoint, llama, "byte");
        return (model, checkpoint);
    }

    [Fact]
    public void AnImportedCheckpointHoldsTheSameModelAndARunStartsFromIt()
    {
        using var dir = new TempDir();
        var config = Tiny(dir).Model;
        var (original, checkpoint) = Imported(dir, config);
        using var _ = original;

        var (model, tree, manifest) = TrainingCheckpoint.LoadModel(checkpoint);   // verified: checksums, headers, index
        using (model)
        {
            Assert.Equal(0, manifest.Step);
            Assert.Equal("byte", manifest.Extra["tokenizer"]);
            Assert.Equal(config with { FfnScaleWithLayer = false }, model.Config);
            manual_seed(1);
            using var ids = randint(0, config.VocabSize, [1, 24]);
            using var noGrad = no_grad();
            original.eval(); model.eval();
            using var a = original.forward(ids);
            using var b = model.forward(ids);
            Assert.True(Same(a, b), "the imported checkpoint computes other logits");
        }

        using var trainer = new Trainer(Tiny(dir, $"checkpoint.init_from={checkpoint}"));
        var weights = trainer.Model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in original.named_parameters())
            Assert.True(Same(weights[name].detach(), p.detach()), $"{name}: not the imported weights at step 0");
        var result = trainer.Run();
        Assert.Equal(2, result.Reports[^1].Step);
    }

    [Fact]
    public void ResumingAnImportedCheckpointIsRefusedWithTheWayToStartFromIt()
    {
        using var dir = new TempDir();
        var (original, checkpoint) = Imported(dir, Tiny(dir).Model);
        original.Dispose();
        using var trainer = new Trainer(Tiny(dir, $"checkpoint.resume={checkpoint}"));
        var e = Assert.Throws<CheckpointException>(() => trainer.Run());
        Assert.StartsWith($"{checkpoint}: imported from {dir.Path}/llama: weights only (no optimizer state, no data position), nothing to resume; start a run from it with --init-from {checkpoint}", e.Message);
    }

    [Fact]
    public void InitFromAnotherModelNamesTheKeysToSet()
    {
        using var dir = new TempDir();
        var (original, checkpoint) = Imported(dir, Tiny(dir, "model.n_layer=2").Model);
        original.Dispose();
        var config = Tiny(dir, $"checkpoint.init_from={checkpoint}");
        var e = Assert.Throws<CheckpointException>(() => new Trainer(config));
        Assert.StartsWith($"{config.Source}: checkpoint.init_from: {checkpoint} holds another model; set model.n_layer=2 (this config: 4)", e.Message);
    }

    [Fact]
    public void AnImportIntoAnExistingFolderIsRefusedAndLeavesNothing()
    {
        using var dir = new TempDir();
        var (original, checkpoint) = Imported(dir, Tiny(dir).Model);
        using var _ = original;
        var e = Assert.Throws<CheckpointException>(() => WeightsCheckpoint.Write(original, checkpoint, "x", null));
        Assert.Equal($"{checkpoint}: exists; import into a new folder (nothing is overwritten)", e.Message);
        Assert.DoesNotContain(Directory.GetDirectories(dir.Path), d => Path.GetFileName(d).StartsWith(".tmp-"));
    }

    /// <summary>Same shape and every value equal (bitwise for finite floats).</summary>
    static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();
}
