using DistTrain.Data;
using DistTrain.Model;
using DistTrain.Model.Layers;

namespace DistTrain.Training.Config;

/// <summary>Reads a YAML config (+ --set overrides) into a validated <see cref="TrainConfig"/>.</summary>
public static class TrainConfigLoader
{
    static readonly Dictionary<string, Architecture> Archs = new()
    {
        ["muddformer"] = Architecture.MUDDFormer,
        ["denseformer"] = Architecture.DenseFormer,
        ["transformer++"] = Architecture.TransformerPP,
        ["transformerpp"] = Architecture.TransformerPP,
    };

    static readonly Dictionary<string, RotaryPrecision> RotaryPrecisions = new()
    {
        ["bf16"] = RotaryPrecision.Bf16,
        ["fp32"] = RotaryPrecision.Fp32,
    };

    /// <summary>The config value of a rotary precision (model.rotary_precision).</summary>
    public static string Name(RotaryPrecision precision) => RotaryPrecisions.Single(p => p.Value == precision).Key;

    static readonly Dictionary<string, KernelChoice> KernelChoices = new()
    {
        ["auto"] = KernelChoice.Auto,
        ["fused"] = KernelChoice.Fused,
        ["reference"] = KernelChoice.Reference,
    };

    public static TrainConfig Load(string path, IEnumerable<string>? overrides = null)
    {
        var tree = YamlTree.Load(path);
        foreach (var assignment in overrides ?? []) YamlTree.Set(tree, assignment);
        var baseDir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        return FromTree(tree, path, baseDir);
    }

    /// <summary>Only the model section (for `disttrain model info`: no data needed).</summary>
    public static ModelConfig LoadModel(string path, IEnumerable<string>? overrides = null)
    {
        var tree = YamlTree.Load(path);
        foreach (var assignment in overrides ?? []) YamlTree.Set(tree, assignment);
        return ModelFromTree(tree, path);
    }

    /// <summary>Only the model section of a config tree (a checkpoint's resolved config, for export).</summary>
    public static ModelConfig ModelFromTree(Dictionary<string, object?> tree, string path)
    {
        var model = ReadModel(new ConfigSection(path, "", tree).Section("model"));
        if (model.Dim % model.NHead != 0) throw new ConfigException($"{path}: model.n_head: dim {model.Dim} is not divisible by n_head {model.NHead}");
        return model;
    }

    public static TrainConfig FromTree(Dictionary<string, object?> tree, string source, string baseDir)
    {
        var root = new ConfigSection(source, "", tree);
        var model = ReadModel(root.Section("model"));
        var data = ReadData(root.Section("data"), baseDir);
        var train = ReadTrain(root.Section("train"), Path.GetFileNameWithoutExtension(source), model.VocabSize);
        var optim = ReadOptim(root.Section("optim"), train.Steps);
        var checkpoint = ReadCheckpoint(root.Section("checkpoint"), train);
        var telemetry = ReadTelemetry(root.Section("telemetry"));
        var elastic = ReadElastic(root.Section("elastic"));
        root.EnsureConsumed();
        var config = new TrainConfig(source, model, data, optim, train, checkpoint) { Tree = tree, Telemetry = telemetry, Elastic = elastic };
        Validate(config);
        return config;
    }

    static ModelConfig ReadModel(ConfigSection s)
    {
        var size = s.String("size", "");
        var baseline = new ModelConfig();
        if (size.Length > 0 && !ModelSizes.TryGet(size, out baseline))
            throw new ConfigException($"{s.Where("size")}: '{size}' is not a known size; use one of: {string.Join(", ", ModelSizes.Names)}");
        var m = new ModelConfig
        {
            Arch = s.Choice("arch", baseline.Arch, Archs),
            VocabSize = s.Int("vocab_size", baseline.VocabSize),
            BlockSize = s.Int("block_size", baseline.BlockSize),
            Dim = s.Int("dim", baseline.Dim),
            NLayer = s.Int("n_layer", baseline.NLayer),
            NHead = s.Int("n_head", baseline.NHead),
            NLocalHeads = s.Int("n_local_heads", baseline.NLocalHeads),
            IntermediateSize = s.Int("intermediate_size", baseline.IntermediateSize),
            RopeBase = s.Double("rope_base", baseline.RopeBase),
            NormEps = s.Double("norm_eps", baseline.NormEps),
            UseQkNorm = s.Bool("use_qk_norm", baseline.UseQkNorm),
            DenseType = s.String("dense_type", baseline.DenseType),
            Sepln = s.Bool("sepln", baseline.Sepln),
            ExpandLast = s.Bool("expand_last", baseline.ExpandLast),
            Round64 = s.Bool("round64", baseline.Round64),
            FfnScaleWithLayer = s.OptionalBool("ffn_scale_with_layer") ?? baseline.FfnScaleWithLayer,
            DwaDilation = s.Int("dwa_dilation", baseline.DwaDilation),
            DwaPeriod = s.Int("dwa_period", baseline.DwaPeriod),
            RotaryPrecision = s.Choice("rotary_precision", baseline.RotaryPrecision, RotaryPrecisions),
        };
        if (s.Has("head_dim") && s.Int("head_dim", 0) != m.HeadDim)
            throw new ConfigException($"{s.Where("head_dim")}: head_dim is dim / n_head = {m.HeadDim} (as in the official MUDDFormer config); remove the key or change dim / n_head");
        s.EnsureConsumed();
        return m;
    }

    static DataOptions ReadData(ConfigSection s, string baseDir)
    {
        string Resolve(string p) => p.Length == 0 || Path.IsPathRooted(p) ? p : Path.GetFullPath(Path.Combine(baseDir, p));
        var train = Resolve(s.String("train", ""));
        var val = Resolve(s.String("val", ""));
        var column = s.String("column", "input_ids");
        var eot = s.Int("end_of_text", -1);
        var shards = s.Int("shards", 0);
        s.EnsureConsumed();
        if (train.Length == 0) throw new ConfigException($"{s.Where("train")}: missing; give a Parquet file or folder (for example configs/corpus/kjv/train)");
        foreach (var (key, path) in new[] { ("train", train), ("val", val) })
            if (path.Length > 0 && !File.Exists(path) && !Directory.Exists(path) && path.IndexOfAny(['*', '?']) < 0)
                throw new ConfigException($"{s.Where(key)}: {path} does not exist; give a Parquet file, a folder of them or a glob (disttrain prepare makes them from text)");
        var manifest = DatasetManifest.FindFor(train);
        if (eot < 0) eot = manifest?.EndOfText
            ?? throw new ConfigException($"{s.Where("end_of_text")}: missing, and no dataset.json next to {train} says it; set data.end_of_text to the tokenizer's end-of-text id");
        if (shards < 0) throw new ConfigException($"{s.Where("shards")}: must be 0 (one per rank) or positive");
        return new DataOptions(train, val.Length == 0 ? null : val, column, eot, manifest?.VocabSize, shards);
    }

    static OptimOptions ReadOptim(ConfigSection s, int steps)
    {
        var o = new OptimOptions(
            Lr: s.Double("lr", 3e-4), MinLrRatio: s.Double("min_lr_ratio", 0.1), WarmupSteps: s.Int("warmup_steps", Math.Min(100, steps / 10)),
            WeightDecay: s.Double("weight_decay", 0.1), Beta1: s.Double("beta1", 0.9), Beta2: s.Double("beta2", 0.95),
            Eps: s.Double("eps", 1e-8), GradClip: s.Double("grad_clip", 1.0));
        s.EnsureConsumed();
        return o;
    }

    /// <summary>
    /// On by default: into the run directory's checkpoints/ (checkpoint.dir empty; `--resume latest` then takes the newest
    /// earlier run of the same train.name), every <see cref="CheckpointOptions.DefaultInterval"/> steps and after the last.
    /// </summary>
    static CheckpointOptions ReadCheckpoint(ConfigSection s, TrainOptions train)
    {
        var interval = s.String("interval", "auto");
        int steps = interval == "auto" ? CheckpointOptions.DefaultInterval(train.Steps)
            : int.TryParse(interval, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var n) ? n
            : throw new ConfigException($"{s.Where("interval")}: '{interval}' is not auto, 0 (no checkpoints) or a number of steps");
        var dir = s.String("dir", "");
        var initFrom = s.String("init_from", "");
        var c = new CheckpointOptions(Dir: dir.Length > 0 ? Path.GetFullPath(dir) : "",
            Interval: steps, Keep: s.Int("keep", 3), Resume: s.String("resume", ""),
            Fallback: s.Bool("fallback", false), OnFailure: s.String("on_failure", "stop"),
            InitFrom: initFrom.Length > 0 ? Path.GetFullPath(initFrom) : "");
        s.EnsureConsumed();
        if (c.OnFailure is not ("stop" or "continue")) throw new ConfigException($"{s.Where("on_failure")}: '{c.OnFailure}' is not a policy; use stop (a failed save ends the run) or continue (train on, the next save retries)");
        if (c.Interval < 0) throw new ConfigException($"{s.Where("interval")}: must be auto, 0 (no checkpoints) or a number of steps");
        if (c.Keep < 1) throw new ConfigException($"{s.Where("keep")}: keep at least 1 checkpoint");
        return c;
    }

    static TelemetryOptions ReadTelemetry(ConfigSection s)
    {
        var t = new TelemetryOptions(TraceEvery: s.Int("trace_every", 10), StragglerFactor: s.Double("straggler_factor", 1.5),
            StragglerAfterSeconds: s.Double("straggler_after_s", 30), PeakTflops: s.Double("peak_tflops", 0));
        s.EnsureConsumed();
        if (t.TraceEvery < 0) throw new ConfigException($"{s.Where("trace_every")}: must be 0 (no step spans) or a number of steps");
        if (t.StragglerFactor <= 1) throw new ConfigException($"{s.Where("straggler_factor")}: {t.StragglerFactor} must be above 1 (1.5: a rank 50% slower than the others' median)");
        if (t.StragglerAfterSeconds < 0) throw new ConfigException($"{s.Where("straggler_after_s")}: must be 0 or more seconds");
        if (t.PeakTflops < 0) throw new ConfigException($"{s.Where("peak_tflops")}: must be 0 (the GPU's known peak) or the device's peak TFLOP/s");
        return t;
    }

    static ElasticOptions ReadElastic(ConfigSection s)
    {
        var e = new ElasticOptions(MaxRestarts: s.Int("max_restarts", 0), MinWorkers: s.Int("min_workers", 0), ReplaceWaitSeconds: s.Double("replace_wait_s", 60),
            SnapshotInterval: s.Int("snapshot_interval", 0));
        s.EnsureConsumed();
        if (e.MaxRestarts < 0) throw new ConfigException($"{s.Where("max_restarts")}: must be 0 (a lost worker ends the job) or the number of recoveries the job may make");
        if (e.MinWorkers < 0) throw new ConfigException($"{s.Where("min_workers")}: must be 0 (every worker of the manifest) or the fewest workers to train with");
        if (e.ReplaceWaitSeconds < 0) throw new ConfigException($"{s.Where("replace_wait_s")}: must be 0 or more seconds to wait for a replacement worker");
        if (e.SnapshotInterval < 0) throw new ConfigException($"{s.Where("snapshot_interval")}: must be 0 (no in-memory snapshots) or the steps between two snapshots");
        if (e.SnapshotInterval > 0 && !e.Enabled)
            throw new ConfigException($"{s.Where("snapshot_interval")}: in-memory snapshots serve recovery, and this job does not recover (elastic.max_restarts is 0); " +
                "set elastic.max_restarts (e.g. 3) or remove elastic.snapshot_interval");
        return e;
    }

    static TrainOptions ReadTrain(ConfigSection s, string defaultName, int vocabSize)
    {
        string precision = s.String("precision", "fp32");
        int defaultChunk = ChunkedCrossEntropy.DefaultChunkRows(vocabSize, precision == "bf16" ? 2 : 4);
        var t = new TrainOptions(
            Steps: s.Int("steps", 1000), MicroBatch: s.Int("micro_batch", 8), GradAccum: s.Int("grad_accum", 1), GlobalBatch: s.Int("global_batch", 0),
            SeqLen: s.Int("seq_len", 256), Seed: s.Int("seed", 1234), Precision: precision,
            Device: s.String("device", "cpu"), LogInterval: s.Int("log_interval", 10), EvalInterval: s.Int("eval_interval", 100),
            EvalBatches: s.Int("eval_batches", 8), RunDir: s.String("run_dir", "runs"), Name: s.String("name", defaultName),
            Ledger: s.Bool("ledger", false), BucketMb: s.Double("bucket_mb", 64),
            ActivationCheckpointing: new ActivationCheckpointing(s.Choice("activation_checkpointing", CheckpointKind.None, ActivationCheckpointing.Names),
                s.Int("activation_checkpointing_every", 1)),
            LossChunk: s.Int("loss_chunk", defaultChunk),
            Kernels: s.Choice("kernels", KernelChoice.Auto, KernelChoices));
        s.EnsureConsumed();
        if (t.ActivationCheckpointing.Every < 1) throw new ConfigException($"{s.Where("activation_checkpointing_every")}: must be 1 (every layer) or more");
        if (t.LossChunk < 0)
            throw new ConfigException($"{s.Where("loss_chunk")}: {t.LossChunk} must be 0 (the full logits, then the loss) or a number of tokens per chunk " +
                                      $"(the default, {defaultChunk} at vocab_size {vocabSize} in {precision}, keeps one chunk's logits near 512 MiB)");
        return t;
    }

    /// <summary>Checks the options against each other, in one place, with what to change.</summary>
    static void Validate(TrainConfig c)
    {
        var (m, t, o, src) = (c.Model, c.Train, c.Optim, c.Source);
        void Require(bool ok, string key, string message) { if (!ok) throw new ConfigException($"{src}: {key}: {message}"); }

        Require(m.Dim > 0 && m.NLayer > 0 && m.NHead > 0, "model", "dim, n_layer and n_head must be positive");
        Require(m.Dim % m.NHead == 0, "model.n_head", $"dim {m.Dim} is not divisible by n_head {m.NHead}; pick n_head dividing dim");
        Require(m.HeadDim % 2 == 0, "model.n_head", $"head_dim = dim / n_head = {m.HeadDim} must be even for rotary");
        Require(m.LocalHeads == m.NHead, "model.n_local_heads", "grouped-query attention is not supported yet; set it to -1 (= n_head)");
        Require(m.VocabSize > c.Data.EndOfText, "model.vocab_size", $"{m.VocabSize} is not above the data's end-of-text id {c.Data.EndOfText}; raise vocab_size to fit the tokenizer");
        Require(m.VocabSize >= (c.Data.TokenizerVocabSize ?? 0), "model.vocab_size",
            $"{m.VocabSize} is below the {c.Data.TokenizerVocabSize} ids of the tokenizer that wrote {c.Data.Train}; raise vocab_size to at least that");
        Require(m.Arch != Architecture.MUDDFormer || m.DenseType == "qkvr", "model.dense_type", $"'{m.DenseType}' is not supported; MUDDFormer uses qkvr");
        Require(m.DwaDilation >= 1 && m.DwaPeriod >= 1, "model.dwa_dilation", "dwa_dilation and dwa_period must be at least 1");
        Require(Enumerable.Range(0, m.NLayer).All(i => m.FfnWidth(i) > 0), "model.intermediate_size",
            $"{m.BaseIntermediateSize} makes layer 0's FFN width round to 0 (widths scale 0.5x..1.5x, rounded to 128); raise it to at least 128");
        Require(m.RopeBase > 0 && m.NormEps > 0, "model.rope_base", "rope_base and norm_eps must be positive");
        Require(t.SeqLen > 0 && t.SeqLen <= m.BlockSize, "train.seq_len", $"{t.SeqLen} must be in 1..model.block_size ({m.BlockSize})");
        Require(t.Steps > 0, "train.steps", "must be at least 1");
        Require(t.MicroBatch > 0, "train.micro_batch", "must be at least 1");
        Require(t.GradAccum > 0, "train.grad_accum", "must be at least 1");
        Require(t.BucketMb > 0, "train.bucket_mb", "must be positive (megabytes of gradient per all-reduce)");
        Require(t.GlobalBatch >= 0, "train.global_batch", "must be 0 (micro_batch x grad_accum x world size) or positive");
        Require(t.LogInterval > 0, "train.log_interval", "must be at least 1");
        Require(t.EvalInterval >= 0 && t.EvalBatches >= 0, "train.eval_interval", "eval_interval and eval_batches must be 0 (off) or positive");
        Require(t.Precision is "fp32" or "bf16" or "fp64", "train.precision", $"'{t.Precision}' is not one of fp32, bf16 (fp64 for checks)");
        Require(t.Device == "cpu" || t.Device.StartsWith("cuda"), "train.device", $"'{t.Device}' is not cpu, cuda or cuda:N");
        Require(t.Kernels != KernelChoice.Fused || t.Device.StartsWith("cuda"), "train.kernels",
            $"fused kernels run on CUDA only and train.device is {t.Device}; use train.kernels=auto (fused on CUDA, reference elsewhere) or reference");
        Require(t.Kernels != KernelChoice.Fused || t.Precision != "fp64", "train.kernels",
            "the fused kernels take fp32 and bf16, not fp64 (gradient checks); use train.kernels=reference with train.precision=fp64");
        Require(o.Lr > 0, "optim.lr", "must be positive");
        Require(o.MinLrRatio is >= 0 and <= 1, "optim.min_lr_ratio", "must be in 0..1");
        Require(o.WarmupSteps >= 0, "optim.warmup_steps", "must be 0 or positive (a warmup longer than train.steps simply never reaches the peak)");
        Require(o.Beta1 is >= 0 and < 1 && o.Beta2 is >= 0 and < 1, "optim.beta1", "beta1 and beta2 must be in [0, 1)");
        Require(o.GradClip >= 0, "optim.grad_clip", "must be 0 (off) or positive");
        Require(o.WeightDecay >= 0, "optim.weight_decay", "must be 0 or positive");
    }
}
