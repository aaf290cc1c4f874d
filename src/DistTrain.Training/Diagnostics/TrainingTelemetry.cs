using System.Diagnostics;
using DistTrain.Model;
using DistTrain.Training.Checkpointing;
using DistTrain.Training.Config;
using TorchSharp;

namespace DistTrain.Training.Diagnostics;

/// <summary>What a rank's telemetry needs to know about its job.</summary>
/// <param name="TokensPerStep">tokens this rank trains per optimizer step</param>
/// <param name="GradientBytes">bytes of the flat gradient buffer (what one all-reduce moves)</param>
/// <param name="PeakFlops">the device's peak FLOP/s for MFU; 0: unknown, no MFU</param>
/// <param name="CudaDevice">-1 on a CPU</param>
/// <param name="TraceEvery">a step span every N steps (0: none)</param>
/// <param name="Parent">the span steps hang under (the worker's or the job's)</param>
public sealed record TelemetryContext(int Rank, int WorldSize, long TokensPerStep, long GradientBytes, double FlopsPerToken, double PeakFlops,
    int CudaDevice, int TraceEvery, ActivityContext Parent);

/// <summary>
/// Turns the trainer's phase callbacks into OpenTelemetry: every step a step-time histogram and
/// token / all-reduce counters; on measured steps (every step on a CPU; on a GPU only traced steps,
/// which synchronise the device at each phase boundary so the times are the GPU's) phase-time
/// histograms and the rank's compute time per step for straggler detection; on traced steps
/// (every telemetry.trace_every-th, and every step that saves) a "step" span with one child span per
/// phase, built after the step from the recorded timestamps so the hot path only reads the clock.
/// </summary>
public sealed class TrainingTelemetry(TelemetryContext context) : ITrainingObserver
{
    static readonly string[] SpanNames = ["data_wait", "forward", "backward", "all_reduce", "optimizer", "checkpoint"];
    static readonly KeyValuePair<string, object?>[] PhaseTags = [.. SpanNames.Select(n => new KeyValuePair<string, object?>("disttrain.phase", n))];

    readonly KeyValuePair<string, object?> _rank = new("disttrain.rank", context.Rank);
    readonly DateTime _originUtc = DateTime.UtcNow;
    readonly long _origin = Stopwatch.GetTimestamp();
    readonly List<(StepPhase Phase, long At)> _marks = new(32);
    readonly Dictionary<int, (ActivityContext Span, long End)> _saves = [];   // the checkpoint phase of each save step, for its write span
    readonly object _lock = new();
    int _step = -1;
    bool _traced;
    double _busySum, _stepSum;
    int _measured;
    StepCompute? _lastCompute;

    bool Cuda => context.CudaDevice >= 0;

    /// <summary>The telemetry of <paramref name="trainer"/>'s rank, its steps hanging under <paramref name="parent"/>.</summary>
    public static TrainingTelemetry For(Trainer trainer, TrainConfig config, int rank, int worldSize, ActivityContext parent)
    {
        var plan = DataParallelPlan.For(config, worldSize);
        int cuda = trainer.Flat.Grads.device.type == DeviceType.CUDA ? trainer.Flat.Grads.device.index : -1;
        double peak = config.Telemetry.PeakTflops * 1e12;
        if (peak <= 0 && cuda >= 0 && DeviceMemory.Open(cuda) is { } gpu) peak = ModelFlops.PeakBf16(gpu.Name);
        return new TrainingTelemetry(new TelemetryContext(rank, worldSize, (long)plan.MicroBatch * plan.GradAccum * config.Train.SeqLen,
            trainer.Flat.Grads.NumberOfElements * trainer.Flat.Grads.ElementSize, ModelFlops.PerToken(config.Model, ModelInfo.Of(trainer.Model), config.Train.SeqLen),
            peak, cuda, config.Telemetry.TraceEvery, parent));
    }

    public void OnStart(int totalSteps, string runDirectory)
    {
        if (Cuda) TrainingDiagnostics.Watch(context.CudaDevice, context.Rank);
    }

    public void OnPhase(int step, StepPhase phase)
    {
        if (step != _step)
        {
            (_step, _traced) = (step, context.TraceEvery > 0 && step % context.TraceEvery == 0);
            _marks.Clear();
        }
        if (phase == StepPhase.Checkpoint) _traced = true;   // every save shows in the trace
        if (_traced && Cuda) torch.cuda.synchronize();
        _marks.Add((phase, Stopwatch.GetTimestamp()));
    }

    public void OnStep(int step)
    {
        if (_traced && Cuda) torch.cuda.synchronize();
        long end = Stopwatch.GetTimestamp();
        if (_marks.Count == 0 || step != _step) return;
        double seconds = Stopwatch.GetElapsedTime(_marks[0].At, end).TotalSeconds;
        TrainingDiagnostics.StepDuration.Record(seconds, _rank);
        TrainingDiagnostics.Tokens.Add(context.TokensPerStep, _rank);
        if (context.WorldSize > 1) TrainingDiagnostics.AllReduceBytes.Add(context.GradientBytes, _rank);

        bool synchronised = !Cuda || _traced;
        if (synchronised)
        {
            Span<double> phases = stackalloc double[SpanNames.Length];
            for (int i = 0; i < _marks.Count; i++)
                phases[(int)_marks[i].Phase] += Stopwatch.GetElapsedTime(_marks[i].At, i + 1 < _marks.Count ? _marks[i + 1].At : end).TotalSeconds;
            Span<bool> seen = stackalloc bool[SpanNames.Length];
            foreach (var (phase, _) in _marks) seen[(int)phase] = true;
            for (int p = 0; p < SpanNames.Length; p++)
                if (seen[p]) TrainingDiagnostics.PhaseDuration.Record(phases[p], _rank, PhaseTags[p]);
            // compute: the step without the all-reduce, where a fast rank waits for a slow one
            lock (_lock) { _busySum += seconds - phases[(int)StepPhase.AllReduce]; _stepSum += seconds; _measured++; }
        }
        if (_traced) Trace(step, end, synchronised);
    }

    /// <summary>Mean compute and step seconds over the measured steps since the last call (the last known when none): what a heartbeat carries.</summary>
    public StepCompute? TakeCompute()
    {
        lock (_lock)
        {
            if (_measured > 0) _lastCompute = new StepCompute(_busySum / _measured, _stepSum / _measured);
            (_busySum, _stepSum, _measured) = (0, 0, 0);
            return _lastCompute;
        }
    }

    public void OnReport(StepReport report)
    {
        TrainingDiagnostics.Throughput.Record(report.TokensPerSecond, _rank);
        TrainingDiagnostics.Loss.Record(report.Loss, _rank);
        TrainingDiagnostics.GradNorm.Record(report.GradNorm, _rank);
        TrainingDiagnostics.LearningRate.Record(report.Lr, _rank);
        if (report.ValLoss is { } val) TrainingDiagnostics.ValLoss.Record(val, _rank);
        if (context.PeakFlops > 0)
            TrainingDiagnostics.Mfu.Record(report.TokensPerSecond * context.FlopsPerToken / (context.PeakFlops * context.WorldSize), _rank);
    }

    public void OnCheckpoint(CheckpointReport report)
    {
        var stage = new KeyValuePair<string, object?>("disttrain.checkpoint.stage", "stall");
        TrainingDiagnostics.CheckpointDuration.Record(report.StallSeconds, _rank, stage);
        if (report.Error is null)
        {
            TrainingDiagnostics.CheckpointBytes.Add(report.Bytes, _rank);
            TrainingDiagnostics.CheckpointDuration.Record(report.WriteSeconds, _rank, new("disttrain.checkpoint.stage", "write"));
        }
        else TrainingDiagnostics.CheckpointFailures.Add(1, _rank);

        var (parent, start) = _saves.Remove(report.Step, out var save) ? (save.Span, At(save.End)) : (context.Parent, DateTime.UtcNow.AddSeconds(-report.WriteSeconds));
        WithoutCurrent(() =>
        {
            using var span = TrainingDiagnostics.Source.StartActivity("checkpoint.write", ActivityKind.Internal, parent, startTime: start);
            if (span is null) return;
            span.SetTag("disttrain.rank", context.Rank).SetTag("disttrain.step", report.Step).SetTag("disttrain.checkpoint.bytes", report.Bytes)
                .SetTag("disttrain.checkpoint.dir", report.Dir);
            if (report.Error is { } error) span.SetStatus(ActivityStatusCode.Error, error);
            span.SetEndTime(start.AddSeconds(report.WriteSeconds));
        });
    }

    /// <summary>An in-memory snapshot (after its step's span): the stall as a metric and a "snapshot" span ending now.</summary>
    public void OnSnapshot(Snapshots.SnapshotReport report)
    {
        TrainingDiagnostics.SnapshotStall.Record(report.StallSeconds, _rank);
        var end = DateTime.UtcNow;
        WithoutCurrent(() =>
        {
            using var span = TrainingDiagnostics.Source.StartActivity("snapshot", ActivityKind.Internal, context.Parent, startTime: end.AddSeconds(-report.StallSeconds));
            if (span is null) return;
            span.SetTag("disttrain.rank", context.Rank).SetTag("disttrain.step", report.Step).SetTag("disttrain.snapshot.bytes", report.Bytes);
            if (report.VoteError is { } error) span.SetTag("disttrain.snapshot.previous_vote", error);
            span.SetEndTime(end);
        });
    }

    void Trace(int step, long end, bool synchronised)
    {
        WithoutCurrent(() =>
        {
            using var span = TrainingDiagnostics.Source.StartActivity("step", ActivityKind.Internal, context.Parent, startTime: At(_marks[0].At));
            if (span is null) return;
            span.SetTag("disttrain.rank", context.Rank).SetTag("disttrain.step", step + 1).SetTag("disttrain.tokens", context.TokensPerStep)
                .SetTag("disttrain.device_synchronised", synchronised);
            int micro = 0;
            for (int i = 0; i < _marks.Count; i++)
            {
                var (phase, at) = _marks[i];
                long until = i + 1 < _marks.Count ? _marks[i + 1].At : end;
                using var child = TrainingDiagnostics.Source.StartActivity(SpanNames[(int)phase], ActivityKind.Internal, span.Context, startTime: At(at));
                if (child is null) continue;
                child.SetTag("disttrain.rank", context.Rank).SetTag("disttrain.step", step + 1);
                if (phase == StepPhase.DataWait) micro++;
                if (phase is StepPhase.DataWait or StepPhase.Forward or StepPhase.Backward) child.SetTag("disttrain.micro_batch", micro - 1);
                if (phase == StepPhase.AllReduce) child.SetTag("disttrain.all_reduce.bytes", context.GradientBytes).SetTag("disttrain.world_size", context.WorldSize);
                if (phase == StepPhase.Checkpoint) _saves[step + 1] = (child.Context, until);
                child.SetEndTime(At(until));
            }
            span.SetEndTime(At(end));
        });
    }

    DateTime At(long timestamp) => _originUtc + Stopwatch.GetElapsedTime(_origin, timestamp);

    /// <summary>Spans built after the fact must not replace the thread's current span (the worker's), which RPCs and logs hang under.</summary>
    static void WithoutCurrent(Action build)
    {
        var current = Activity.Current;
        try { build(); }
        finally { Activity.Current = current; }
    }
}

/// <summary>A rank's mean seconds per step: computing (all but the all-reduce) and in all.</summary>
public sealed record StepCompute(double ComputeSeconds, double StepSeconds);
