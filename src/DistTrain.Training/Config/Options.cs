using DistTrain.Model;

namespace DistTrain.Training.Config;

/// <summary>Where the tokens come from. Paths are resolved against the config file's folder; TokenizerVocabSize comes from dataset.json when there is one.</summary>
/// Shards: canonical data shards (0: one per rank); pin it to keep the sample order across world sizes.
public sealed record DataOptions(string Train, string? Val, string Column, int EndOfText, int? TokenizerVocabSize, int Shards);

/// <summary>AdamW with warmup + cosine decay to min_lr_ratio · lr.</summary>
public sealed record OptimOptions(double Lr, double MinLrRatio, int WarmupSteps, double WeightDecay, double Beta1, double Beta2, double Eps, double GradClip);

/// <summary>
/// The step loop. micro_batch is per rank. global_batch (sequences per optimizer step over all
/// ranks) fixes grad_accum = global_batch / (world size · micro_batch); 0 means micro_batch ·
/// grad_accum · world size. ledger writes which windows each rank trained at each step.
/// activation_checkpointing: none | block | mudd, on every activation_checkpointing_every-th layer.
/// LossChunk: tokens per chunk of the fused output projection + loss (0: the full logits, then the loss).
/// Kernels: which implementation of the memory-bound ops and AdamW runs (see <see cref="KernelChoice"/>).
/// </summary>
public sealed record TrainOptions(
    int Steps, int MicroBatch, int GradAccum, int GlobalBatch, int SeqLen, int Seed, string Precision, string Device,
    int LogInterval, int EvalInterval, int EvalBatches, string RunDir, string Name, bool Ledger, double BucketMb,
    ActivationCheckpointing ActivationCheckpointing, int LossChunk, KernelChoice Kernels = KernelChoice.Auto);

/// <summary>
/// train.kernels: auto = the fused CUDA kernels when the run is on CUDA and they load, else the
/// reference; fused = the fused kernels or an error saying why not; reference = plain TorchSharp ops.
/// </summary>
public enum KernelChoice { Auto, Fused, Reference }

/// <summary>
/// Checkpoints: every Interval steps (0: never; default <see cref="DefaultInterval"/>) and after the last step, into Dir
/// (empty: the run directory's checkpoints/ folder, see <see cref="RunDirectory.CheckpointsOf"/>; "latest" then means
/// <see cref="RunDirectory.LatestCheckpoints"/>), keeping the last
/// Keep; Resume: a checkpoint folder or "latest"; Fallback: a "latest" that fails verification gives
/// way to the newest good one; OnFailure: "stop" or "continue" when a save fails (disk full, permissions);
/// InitFrom: a checkpoint whose weights a fresh run starts from (optimizer, step and data from the start; an
/// imported Llama checkpoint, or any other of the same model); a resume takes precedence.
/// </summary>
public sealed record CheckpointOptions(string Dir, int Interval, int Keep, string Resume, bool Fallback = false, string OnFailure = "stop", string InitFrom = "")
{
    /// <summary>
    /// checkpoint.interval: auto: a tenth of train.steps, at most 1000 (the tiny 800-step run saves every 80 steps, a
    /// 20,000-step GPU run every 1000): a crash loses at most a tenth of a short run and about 1000 steps of a long one.
    /// </summary>
    public static int DefaultInterval(int steps) => Math.Clamp((steps + 9) / 10, 1, 1000);
}

/// <summary>
/// What the run reports beyond metrics.jsonl: a traced step (span with its phases) every TraceEvery
/// steps (0: none); a rank whose compute per step exceeds the other ranks' median by StragglerFactor
/// for StragglerAfterSeconds is reported as a straggler; PeakTflops is the device's peak for MFU
/// (0: the known bf16 peak of the GPU, none on a CPU).
/// </summary>
public sealed record TelemetryOptions(int TraceEvery = 10, double StragglerFactor = 1.5, double StragglerAfterSeconds = 30, double PeakTflops = 0);

/// <summary>
/// Recovery from a lost or hung worker (the elastic section). MaxRestarts: how many times the job opens a new generation
/// after a failure before it gives up (0: the first failure ends the job, as without the section); MinWorkers: the fewest
/// workers a generation may train with (0: every worker the manifest lists); ReplaceWaitSeconds: how long a new generation
/// waits for a replacement of the lost worker before it goes on with the workers it has (at least MinWorkers);
/// SnapshotInterval: steps between in-memory snapshots of the training state, each rank's slice also held by its right
/// neighbour, which a recovery restores instead of the last disk checkpoint (0: none).
/// </summary>
public sealed record ElasticOptions(int MaxRestarts = 0, int MinWorkers = 0, double ReplaceWaitSeconds = 60, int SnapshotInterval = 0)
{
    public bool Enabled => MaxRestarts > 0;

    /// <summary>The fewest workers of a generation in a job of <paramref name="worldSize"/> workers.</summary>
    public int MinimumOf(int worldSize) => MinWorkers > 0 ? MinWorkers : worldSize;
}

/// <summary>The one options tree: read from YAML once, checked against itself once.</summary>
public sealed record TrainConfig(string Source, ModelConfig Model, DataOptions Data, OptimOptions Optim, TrainOptions Train, CheckpointOptions Checkpoint)
{
    /// <summary>The resolved YAML tree (after --set), written into each run directory.</summary>
    public Dictionary<string, object?> Tree { get; init; } = [];

    public TelemetryOptions Telemetry { get; init; } = new();

    public ElasticOptions Elastic { get; init; } = new();
}
