using DistTrain.Model;

namespace DistTrain.Training.Config;

/// <summary>Where the tokens come from. Paths are resolved against the config file's folder; TokenizerVocabSize comes from dataset.json when there is one.</summary>
public sealed record DataOptions(string Train, string? Val, string Column, int EndOfText, int? TokenizerVocabSize);

/// <summary>AdamW with warmup + cosine decay to min_lr_ratio · lr.</summary>
public sealed record OptimOptions(double Lr, double MinLrRatio, int WarmupSteps, double WeightDecay, double Beta1, double Beta2, double Eps, double GradClip);

/// <summary>The step loop. micro_batch is per rank; the global batch is micro_batch · grad_accum · world size.</summary>
public sealed record TrainOptions(
    int Steps, int MicroBatch, int GradAccum, int SeqLen, int Seed, string Precision, string Device,
    int LogInterval, int EvalInterval, int EvalBatches, string RunDir, string Name);

/// <summary>The one options tree: read from YAML once, checked against itself once.</summary>
public sealed record TrainConfig(string Source, ModelConfig Model, DataOptions Data, OptimOptions Optim, TrainOptions Train)
{
    /// <summary>The resolved YAML tree (after --set), written into each run directory.</summary>
    public Dictionary<string, object?> Tree { get; init; } = [];
}
