using System.Globalization;
using DistTrain.Model;

namespace DistTrain.Training.Config;

/// <summary>
/// The options tree written back as YAML with every key the loader reads, defaults filled in and paths absolute
/// (data.train, data.val, train.run_dir, checkpoint.dir): what a run directory's config.yaml and a checkpoint's
/// manifest hold, so that `disttrain train --config RUN/config.yaml` runs the same job from any folder.
/// model.size is replaced by the sizes it stands for; checkpoint.resume is left empty (a resume is the command's, not
/// the run's: pass --resume); checkpoint.interval is the resolved number of steps.
/// </summary>
public static class ResolvedConfig
{
    public static Dictionary<string, object?> Tree(TrainConfig c)
    {
        var (m, d, t, o, k, y) = (c.Model, c.Data, c.Train, c.Optim, c.Checkpoint, c.Telemetry);
        return new()
        {
            ["model"] = Map(
                ("arch", m.Arch switch { Architecture.MUDDFormer => "muddformer", Architecture.DenseFormer => "denseformer", _ => "transformerpp" }),
                ("vocab_size", m.VocabSize), ("block_size", m.BlockSize), ("dim", m.Dim), ("n_layer", m.NLayer), ("n_head", m.NHead),
                ("n_local_heads", m.LocalHeads), ("intermediate_size", m.BaseIntermediateSize), ("rope_base", m.RopeBase), ("norm_eps", m.NormEps),
                ("use_qk_norm", m.UseQkNorm), ("dense_type", m.DenseType), ("sepln", m.Sepln), ("expand_last", m.ExpandLast), ("round64", m.Round64),
                ("ffn_scale_with_layer", m.ScalesFfnWithLayer), ("dwa_dilation", m.DwaDilation), ("dwa_period", m.DwaPeriod),
                ("rotary_precision", TrainConfigLoader.Name(m.RotaryPrecision))),
            ["data"] = Map(("train", d.Train), ("val", d.Val ?? ""), ("column", d.Column), ("end_of_text", d.EndOfText), ("shards", d.Shards)),
            ["train"] = Map(
                ("steps", t.Steps), ("micro_batch", t.MicroBatch), ("grad_accum", t.GradAccum), ("global_batch", t.GlobalBatch), ("seq_len", t.SeqLen),
                ("seed", t.Seed), ("precision", t.Precision), ("device", t.Device), ("log_interval", t.LogInterval), ("eval_interval", t.EvalInterval),
                ("eval_batches", t.EvalBatches), ("run_dir", Path.GetFullPath(t.RunDir)), ("name", t.Name), ("ledger", t.Ledger), ("bucket_mb", t.BucketMb),
                ("activation_checkpointing", ActivationCheckpointing.Names.First(n => n.Value == t.ActivationCheckpointing.Kind).Key),
                ("activation_checkpointing_every", t.ActivationCheckpointing.Every), ("loss_chunk", t.LossChunk),
                ("kernels", t.Kernels.ToString().ToLowerInvariant())),
            ["optim"] = Map(
                ("lr", o.Lr), ("min_lr_ratio", o.MinLrRatio), ("warmup_steps", o.WarmupSteps), ("weight_decay", o.WeightDecay),
                ("beta1", o.Beta1), ("beta2", o.Beta2), ("eps", o.Eps), ("grad_clip", o.GradClip)),
            ["checkpoint"] = Map(("dir", k.Dir), ("interval", k.Interval), ("keep", k.Keep), ("resume", ""), ("fallback", k.Fallback), ("on_failure", k.OnFailure),
                ("init_from", k.InitFrom.Length == 0 ? "" : Path.GetFullPath(k.InitFrom))),
            ["telemetry"] = Map(("trace_every", y.TraceEvery), ("straggler_factor", y.StragglerFactor), ("straggler_after_s", y.StragglerAfterSeconds),
                ("peak_tflops", y.PeakTflops)),
            ["elastic"] = Map(("max_restarts", c.Elastic.MaxRestarts), ("min_workers", c.Elastic.MinWorkers), ("replace_wait_s", c.Elastic.ReplaceWaitSeconds), ("snapshot_interval", c.Elastic.SnapshotInterval)),
        };
    }

    /// <summary>The YAML text of <see cref="Tree"/>.</summary>
    public static string Yaml(TrainConfig c) => YamlTree.Write(Tree(c));

    static Dictionary<string, object?> Map(params (string Key, object Value)[] entries) =>
        entries.ToDictionary(e => e.Key, e => (object?)(e.Value switch
        {
            bool b => b ? "true" : "false",
            double v => v.ToString("R", CultureInfo.InvariantCulture),
            IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
            var v => v.ToString(),
        }));
}
