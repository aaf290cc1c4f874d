using System.Diagnostics;
using DistTrain.Checkpoint;
using DistTrain.Data;
using DistTrain.Distributed;
using DistTrain.Model;
using DistTrain.Model.Layers;
using DistTrain.Training.Checkpointing;
using DistTrain.Training.Config;
using DistTrain.Training.Diagnostics;
using DistTrain.Training.Optim;
using DistTrain.Training.Snapshots;
using DistTrain.Training.Stopping;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training;

/// <summary>
/// The training loop for any world size (1 here, N with another <see cref="ICommunicator"/>).
/// The step reads top to bottom in <see cref="Run"/>: batch, forward, backward (x grad_accum),
/// all-reduce, clip + AdamW, checkpoint, log. Everything else is called from it.
/// </summary>
public sealed class Trainer : IDisposable
{
    readonly TrainConfig _config;
    readonly ICommunicator _comm;
    readonly DataAssignment _data;
    readonly string? _runId;
    readonly string _job;
    readonly ICheckpointCommit _commit;
    readonly Device _device;
    readonly ScalarType _dtype;
    readonly StopGate _stop;
    string? _lastCheckpoint;
    readonly int _generation;
    readonly SnapshotPlan? _snapshots;
    string _checkpointDir = "";

    /// <param name="comm">the ranks' communicator; null: one process (world size 1)</param>
    /// <param name="data">this rank's shards; null: computed here (what every rank of a job computes)</param>
    /// <param name="runId">the run directory name shared by all ranks; null: NAME-TIMESTAMP</param>
    /// <param name="commit">the two-phase commit of checkpoints across ranks (the coordinator's); null: one process commits alone</param>
    /// <param name="job">the job the run belongs to (a cluster manifest's job); null: train.name. Its saves' temporary folders carry it</param>
    /// <param name="stop">where a graceful stop (a signal) ends the loop; null: the run always trains to train.steps</param>
    /// <param name="generation">an elastic job's generation (0 until its first recovery): a later one continues the run
    /// directory <paramref name="runId"/>, and the ledger keeps every generation's lines, each marked with it</param>
    /// <param name="snapshots">an elastic job's in-memory snapshots (elastic.snapshot_interval), and the one this generation restores; null: none</param>
    public Trainer(TrainConfig config, ICommunicator? comm = null, DataAssignment? data = null, string? runId = null, ICheckpointCommit? commit = null,
        string? job = null, StopGate? stop = null, int generation = 0, SnapshotPlan? snapshots = null)
    {
        _generation = generation;
        _snapshots = snapshots;
        _stop = stop ?? new StopGate();
        _config = config;
        _comm = comm ?? new LocalCommunicator();
        if (commit is null && _comm.WorldSize > 1)
            throw new ArgumentException($"a job of {_comm.WorldSize} ranks commits checkpoints through its coordinator; pass its ICheckpointCommit", nameof(commit));
        _commit = commit ?? new SingleRankCommit();
        _data = data ?? DataAssignment.For(config, DataParallelPlan.For(config, _comm.WorldSize), _comm.Rank);
        _runId = runId;
        _job = job ?? config.Train.Name;
        _device = DeviceFor(config);
        _dtype = Precision.Parse(config.Train.Precision);
        manual_seed(config.Train.Seed);
        Kernels = KernelSelection.For(config.Train.Kernels, config.Train.Device, config.Train.Precision, config.Source);
        Model = new LanguageModel(config.Model) { Checkpointing = config.Train.ActivationCheckpointing, Kernels = Kernels.Kernels };
        Flat = new FlatParameters(Model, _dtype, _device);
        // checkpoint.init_from: rank 0 reads the weights, the broadcast hands them to the others; a resume overwrites them anyway
        if (config.Checkpoint.InitFrom.Length > 0 && config.Checkpoint.Resume.Length == 0 && _comm.Rank == 0)
            WeightsCheckpoint.LoadInto(config.Checkpoint.InitFrom, Flat, config.Model, config.Source);
        _comm.Broadcast(Flat.Master, root: 0);   // every rank starts from rank 0's fp32 weights
        Flat.PublishMaster();
        Optimizer = new FlatAdamW(Flat, config.Optim, Kernels.AdamW);
    }

    /// <summary>Which kernels run (train.kernels) and why; the run's first lines say it.</summary>
    public KernelSelection Kernels { get; }

    /// <summary>Where each of this rank's shard readers stands (safe to read from another thread, e.g. for heartbeats).</summary>
    public IReadOnlyList<DataCursor> DataCursors => _loader?.Cursors ?? [];
    BatchLoader? _loader;

    public LanguageModel Model { get; }
    public FlatParameters Flat { get; }
    public FlatAdamW Optimizer { get; }

    public TrainResult Run(ITrainingObserver? observer = null, CancellationToken ct = default)
    {
        var (t, o, plan) = (_config.Train, _config.Optim, _data.Plan);
        observer?.OnKernels(Kernels.Description);
        var schedule = new LrSchedule(o.Lr, o.WarmupSteps, t.Steps, o.MinLrRatio);
        int startStep = 0;
        IReadOnlyDictionary<int, DataCursor> resumeCursors = new Dictionary<int, DataCursor>();
        string? resumedFrom = null;
        var c = _config.Checkpoint;
        using var buddies = _snapshots is null ? null : new BuddySnapshots(_snapshots, _comm, _generation, Flat);
        if (_snapshots?.Restore is { } snapshot)
        {
            // a new generation of an elastic job: the state comes from the peers' memory, not from disk
            startStep = buddies!.Restore(snapshot, Flat, Optimizer);
            resumeCursors = snapshot.Cursors;
            observer?.OnSnapshotRestored(snapshot);
        }
        else if (c.Resume.Length > 0)
        {
            // checked before the run directory exists: a refused resume leaves no empty run behind
            var from = c.Resume == "latest" && c.Dir.Length == 0 ? c with { Dir = RunDirectory.LatestCheckpoints(_config)
                ?? throw new CheckpointException($"{Path.GetFullPath(t.RunDir)}: no run named {t.Name} has a checkpoint (checkpoints/latest) to resume from; " +
                    "pass --resume with a checkpoint folder, or set checkpoint.dir to where the checkpoints are") } : c;
            var resumed = TrainingCheckpoint.Load(c.Resume, from, Flat, Optimizer, plan, _job);
            (startStep, resumeCursors, resumedFrom) = (resumed.Step, resumed.Cursors, resumed.RunDirectory ?? RunOf(resumed.Checkpoint));
            if (startStep >= t.Steps)
                throw new TrainingException(
                    $"{resumed.Checkpoint}: the run already finished: it is at step {startStep} and train.steps is {t.Steps}; " +
                    $"to train further raise train.steps (e.g. --set train.steps={startStep + Math.Max(1, t.Steps)}) and resume again " +
                    "(the learning-rate schedule then follows the new length)");
            observer?.OnResume(resumed);
        }
        using var train = new BatchLoader(_data.Shards.Select(s => (s.Shard, OpenReader(_config.Data.Train, loop: true, s.Range, resumeCursors.GetValueOrDefault(s.Shard)))).ToList(),
            plan.WindowsPerShard, t.SeqLen, _device);
        _loader = train;
        // an explicit checkpoint.dir that cannot be written stops the run before its run directory exists (nothing empty left behind)
        if (c.Dir.Length > 0 && c.Interval > 0) WritableFolder.Ensure(c.Dir, "checkpoint.dir", _config, _comm.Rank);
        // a resume continues the run directory that wrote its checkpoint (one metrics curve), when that is under train.run_dir
        // a later generation without a checkpoint to restore starts again from step 0 in the job's folder
        using var run = RunDirectory.Continued(_config, resumedFrom) is { } continued ? Continue(continued, startStep, observer)
            : _generation > 0 && _runId is not null && RunDirectory.Existing(_config, _runId) is { } restarted ? Continue(restarted, startStep, observer)
            : RunDirectory.Create(_config, _runId, _comm.Rank, _generation);
        if (c.Dir.Length == 0) c = c with { Dir = RunDirectory.CheckpointsOf(run.Path) };
        _checkpointDir = c.Dir;
        using var saver = c.Interval > 0 ? new CheckpointSaver(c, _config, _comm.Rank, _comm.WorldSize, _commit, new SaveOwner(_job, Path.GetFileName(run.Path)), Flat, run.Path) : null;
        observer?.OnStart(t.Steps, run.Path);
        _stop.Begin(startStep);
        double? initialValLoss = Evaluate();

        long tokensPerStep = (long)plan.GlobalBatch * t.SeqLen;
        var lossSum = zeros([], ScalarType.Float32, _device);
        var reports = new List<StepReport>();
        var window = Stopwatch.StartNew();
        double waitAtWindow = 0;
        int stepsInWindow = 0;
        Model.train();
        StopOutcome? stopped = null;

        for (int step = startStep; step < t.Steps; step++)
        {
            ct.ThrowIfCancellationRequested();
            double lr = schedule.At(step);
            Tensor gradNorm;
            using (var scope = NewDisposeScope())
            {
                for (int micro = 0; micro < plan.GradAccum; micro++)
                {
                    // the micro-batch's graph ends here: custom functions keep their saved tensors until it is freed
                    using var microScope = NewDisposeScope();
                    observer?.OnPhase(step, StepPhase.DataWait);
                    var (x, y) = train.Next(plan.MicroBatch)!.Value;
                    observer?.OnPhase(step, StepPhase.Forward);
                    SlowRankFault.At(_comm.Rank);
                    var loss = Loss(Model, x, y, t.LossChunk).div(Scalars.Of(plan.GradAccum));
                    observer?.OnPhase(step, StepPhase.Backward);
                    loss.backward();
                    lossSum.PlusInPlace(loss.detach());
                }
                observer?.OnPhase(step, StepPhase.AllReduce);
                GradientBuckets.AllReduceMean(_comm, Flat.Grads, GradientBuckets.BytesFromMegabytes(t.BucketMb));
                observer?.OnPhase(step, StepPhase.Optimizer);
                gradNorm = Optimizer.Step(lr, step).MoveToOuterDisposeScope();
                Flat.ZeroGrads();
            }
            stepsInWindow++;
            Saved(saver?.Poll(), observer);
            if (t.Ledger) run.AppendLedger(step + 1, train.Taken);
            train.Taken.Clear();
            bool last = step == t.Steps - 1;
            // a graceful stop (a signal): this step is the last, saved like the final one
            bool stop = !last && _stop.StopAfter(step + 1, ct);
            if (saver is not null && ((step + 1) % c.Interval == 0 || last || stop))
            {
                observer?.OnPhase(step, StepPhase.Checkpoint);
                Saved(saver.Begin(Flat, Optimizer, plan, step + 1, tokensPerStep * (step + 1), train.ShardCursors, ct), observer);
            }
            observer?.OnStep(step);

            if ((step + 1) % t.LogInterval == 0 || last || stop)
            {
                // a host sync: only every log_interval steps; the loss is the mean over ranks
                _comm.AllReduceMean(lossSum);
                double loss = lossSum.item<float>() / stepsInWindow;
                double norm = gradNorm.item<float>();
                CheckFinite(step, loss);
                double seconds = window.Elapsed.TotalSeconds;
                double? val = (t.EvalInterval > 0 && (step + 1) % t.EvalInterval == 0) || last ? Evaluate() : null;
                var report = new StepReport(step + 1, loss, lr, tokensPerStep * (step + 1), tokensPerStep * stepsInWindow / seconds,
                    norm, train.WaitSeconds - waitAtWindow, seconds / stepsInWindow, val);
                reports.Add(report);
                run.Append(report);
                observer?.OnReport(report);
                lossSum.fill_(Scalars.Of(0.0));   // TorchSharp's zero_() returns a second handle, left to a finalizer outside the step's scope
                stepsInWindow = 0;
                waitAtWindow = train.WaitSeconds;
                window.Restart();
            }
            // after the step's report (its loss all-reduce): a snapshot restored later never skips a logged step; the last step
            // has its final checkpoint, so a recovery after it has nothing left to train
            if (buddies is not null && buddies.Due(step + 1) && !last && !stop)
            {
                observer?.OnSnapshot(buddies.Take(step + 1, Flat, Optimizer, train.ShardCursors, ct));
            }
            gradNorm.Dispose();
            if (stop)
            {
                stopped = new StopOutcome(step + 1, null);
                break;
            }
        }
        Saved(saver?.Wait(), observer, final: true);
        if (stopped is not null) stopped = stopped with { Checkpoint = _lastCheckpoint };
        lossSum.Dispose();
        _loader = null;
        return new TrainResult(run.Path, reports, train.Cursors, initialValLoss) { Stopped = stopped, StartStep = startStep };
    }

    RunDirectory Continue(string path, int step, ITrainingObserver? observer)
    {
        var (run, superseded) = RunDirectory.Continue(_config, path, step, _comm.Rank, _comm.WorldSize, _generation);
        observer?.OnContinued(path, step, superseded, RunDirectory.ResumeFolder(path, step));
        return run;
    }

    /// <summary>A checkpoint whose manifest names no run directory (an older one): RUN when it lies in RUN/checkpoints/ beside RUN/config.yaml.</summary>
    static string? RunOf(string checkpoint)
    {
        var root = Path.GetDirectoryName(Path.GetFullPath(checkpoint));
        var run = root is null || Path.GetFileName(root) != "checkpoints" ? null : Path.GetDirectoryName(root);
        return run is not null && File.Exists(Path.Combine(run, "config.yaml")) ? run : null;
    }

    /// <summary>
    /// Reports a finished save; a failed one stops the run unless checkpoint.on_failure is continue, and a failed
    /// final save always ends the run with an error: there is no later save to retry, the last steps are unsaved.
    /// </summary>
    void Saved(CheckpointReport? report, ITrainingObserver? observer, bool final = false)
    {
        if (report is null) return;
        observer?.OnCheckpoint(report);
        if (report.Error is null) _lastCheckpoint = report.Dir;
        if (final && report.Error is { } lost)
            throw new TrainingException($"the final checkpoint (step {report.Step}) failed: {lost}. Training finished but its last steps are not saved " +
                $"(checkpoint.on_failure={_config.Checkpoint.OnFailure} retries only at a later save); free space or fix permissions under {_checkpointDir} " +
                "and resume from the last good checkpoint to train them again");
        if (report.Error is { } error && _config.Checkpoint.OnFailure == "stop")
            throw new TrainingException($"the checkpoint of step {report.Step} failed: {error}. Training stopped (checkpoint.on_failure=stop); free space or fix permissions under {_checkpointDir} and resume from the last good checkpoint, or set checkpoint.on_failure=continue to train on and retry at the next save");
    }

    /// <summary>Mean next-token loss over the validation set (its first eval_batches batches), or null without one.</summary>
    public double? Evaluate()
    {
        if (_config.Data.Val is null || _config.Train.EvalBatches == 0) return null;
        using var val = new BatchLoader([(0, OpenReader(_config.Data.Val, loop: false, range: null, start: null))], _config.Train.MicroBatch, _config.Train.SeqLen, _device);
        Model.eval();
        double sum = 0;
        int batches = 0;
        using (no_grad())
        {
            for (; batches < _config.Train.EvalBatches; batches++)
            {
                using var scope = NewDisposeScope();
                if (val.Next(_config.Train.MicroBatch) is not var (x, y)) break;
                sum += Loss(Model, x, y, _config.Train.LossChunk).item<float>();
            }
        }
        Model.train();
        if (batches == 0)
            throw new TrainingException($"{_config.Data.Val}: validation data is shorter than one batch ({_config.Train.MicroBatch} windows of {_config.Train.SeqLen + 1} tokens); add validation data or lower train.micro_batch");
        return sum / batches;
    }

    /// <summary>
    /// The model's next-token loss on inputs (B, T) against targets (B, T): the output projection
    /// fused into the loss over chunks of <paramref name="lossChunk"/> tokens, or with 0 the full
    /// logits and then <see cref="Loss(Tensor, Tensor)"/>. Both give the same loss and gradients up to float rounding.
    /// </summary>
    public static Tensor Loss(LanguageModel model, Tensor inputs, Tensor targets, int lossChunk) =>
        lossChunk > 0 ? model.Loss(inputs, targets, lossChunk) : Loss(model.forward(inputs), targets);

    /// <summary>Next-token cross entropy in fp32: logits (B, T, V), targets (B, T).</summary>
    public static Tensor Loss(Tensor logits, Tensor targets)
    {
        using var scope = NewDisposeScope();
        var flat = Precision.Upcast(logits).reshape(-1, logits.shape[^1]);
        return nn.functional.cross_entropy(flat, targets.reshape(-1)).MoveToOuterDisposeScope();
    }

    void CheckFinite(int step, double loss)
    {
        long bad = Optimizer.FirstNonFiniteStep;
        if (bad < 0 && double.IsFinite(loss)) return;
        string at = bad >= 0 ? $"step {bad + 1}" : $"the steps up to {step + 1}";
        throw new TrainingException(
            $"the loss became {(double.IsNaN(loss) ? "NaN" : "non-finite")} at {at}; training stopped and no update was applied from that step on. " +
            $"Hint: lower optim.lr (now {_config.Optim.Lr}), keep optim.grad_clip on (now {_config.Optim.GradClip}), lengthen optim.warmup_steps, or try train.precision=fp32.");
    }

    TokenWindowReader OpenReader(string path, bool loop, WindowRange? range, DataCursor? start) => new(new WindowReaderOptions(
        DatasetFiles.Resolve(path), _config.Train.SeqLen, _config.Data.EndOfText, _config.Model.VocabSize, _config.Data.Column, Loop: loop, Range: range), start);

    static Device DeviceFor(TrainConfig config)
    {
        var name = config.Train.Device;
        if (name.StartsWith("cuda") && !cuda.is_available())
            throw new ConfigException($"{config.Source}: train.device: '{name}' asked for, but this libtorch has no CUDA device; use train.device=cpu or build against a CUDA libtorch (README, 'GPU build')");
        return device(name);
    }

    public void Dispose()
    {
        Optimizer.Dispose();
        Flat.Dispose();
        Model.Dispose();
        Kernels.Dispose();
    }
}

/// <summary>What a finished run leaves: its folder, every logged report, where the data stands, and the validation loss before step 1.</summary>
public sealed record TrainResult(string RunDirectory, IReadOnlyList<StepReport> Reports, IReadOnlyList<DataCursor> Cursors, double? InitialValLoss)
{
    /// <summary>The step the run started from: 0, or the resumed checkpoint's.</summary>
    public int StartStep { get; init; }

    /// <summary>Where a graceful stop ended the run before train.steps (null: it trained to the end).</summary>
    public StopOutcome? Stopped { get; init; }
}
