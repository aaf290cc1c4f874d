using System.Diagnostics;
using System.Text.Json;
using DistTrain.Cuda;
using DistTrain.Model;
using DistTrain.Training.Config;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training.Diagnostics;

/// <summary>What `disttrain bench` measured for one config (numbers only; it asserts nothing).</summary>
public sealed record BenchmarkResult(
    string Arch, string Checkpointing, string Precision, string Device, string DeviceName, int MicroBatch, int SeqLen, int GradAccum,
    int WarmupSteps, int TimedSteps, double StepsPerSecond, double TokensPerSecond, double FlopsPerToken, double PeakFlops, double? Mfu,
    double? ModelStateGiB, double? AfterWarmupGiB, double? AtEndGiB, Dictionary<string, double> PhaseMilliseconds, int ProfiledSteps,
    int? LargestMicroBatch, int[] FitTried, string Kernels = "", double? HostLeadMilliseconds = null,
    IReadOnlyList<PhaseLead>? Timeline = null, double TensorsPerStep = 0, double FusedLaunchesPerStep = 0)
{
    public IEnumerable<string> Describe()
    {
        if (Kernels.Length > 0) yield return Kernels;
        yield return $"train: {Arch} {Precision} on {Device} ({DeviceName}), checkpointing {Checkpointing}, micro-batch {MicroBatch} x {SeqLen}, grad_accum {GradAccum}: " +
                     $"{StepsPerSecond:F3} steps/s, {TokensPerSecond:N0} tokens/s ({TimedSteps} steps after {WarmupSteps} warmup)";
        yield return $"flops: {FlopsPerToken / 1e9:F3} GFLOP/token (6N + 12·L·D·T) = {TokensPerSecond * FlopsPerToken / 1e12:F1} TFLOP/s" +
                     (Mfu is { } m ? $", MFU {100 * m:F1}% of {PeakFlops / 1e12:F1} TFLOP/s bf16 dense" : ", MFU: unknown device peak (--peak-tflops)");
        yield return $"host work per timed step: {TensorsPerStep:N0} TorchSharp tensors created on the training thread (forward, loss and optimizer: " +
                     $"one per op or view; backward runs in libtorch), {FusedLaunchesPerStep:N0} launches of DistTrain's fused kernels (every thread)";
        if (HostLeadMilliseconds is { } lead)
            yield return $"host lead: the GPU still had {lead:F1} ms of queued work when the host finished the last warmup step " +
                         $"({lead * StepsPerSecond / 10:F0}% of a step; the clock starts after it)";
        foreach (var p in Timeline ?? [])
            yield return $"timeline of timed steps 2-{TimedSteps}, {p.Phase}: host {p.HostMs:F1} ms, GPU {p.GpuMs:F1} ms; " +
                         $"GPU backlog at its start mean {p.MeanLeadMs:F1} ms, least {p.MinLeadMs:F1} ms (near 0: the GPU waited for the host)";
        if (AfterWarmupGiB is { } warm)
            yield return $"device memory (NVML, CUDA context + caching allocator reserve): {ModelStateGiB:F2} GiB with the model and optimizer state, " +
                         $"{warm:F2} GiB after {WarmupSteps} steps (peak reserved), {AtEndGiB:F2} GiB after {WarmupSteps + TimedSteps + ProfiledSteps} steps (growth {AtEndGiB - warm:+0.00;-0.00} GiB)";
        double total = PhaseMilliseconds.Values.Sum();
        yield return $"phases (mean of {ProfiledSteps} synchronised steps, {total:F1} ms): " +
                     string.Join(", ", PhaseMilliseconds.Select(p => $"{p.Key} {p.Value:F1} ms ({100 * p.Value / Math.Max(total, 1e-9):F0}%)"));
        if (FitTried.Length > 0)
            yield return LargestMicroBatch is { } mb
                ? $"largest micro-batch that fits (of {string.Join(", ", FitTried)}) at seq {SeqLen}: {mb}"
                : $"no micro-batch of {string.Join(", ", FitTried)} fits at seq {SeqLen}";
    }

    public string ToJson() => JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true });
}

/// <summary>
/// Runs the trainer for warmup + timed + profiled steps and measures: throughput over the timed
/// steps (unsynchronised, ended by the log step's host sync), the phases of the profiled steps
/// (synchronised), device memory through NVML, and optionally the largest micro-batch that fits.
/// </summary>
public static class TrainingBenchmark
{
    /// <param name="observe">another observer of the run (telemetry, to measure its cost); null: none</param>
    public static BenchmarkResult Run(TrainConfig options, int warmup, int timed, int profiled, double peakFlops, int[] fitMicroBatches,
        Func<Trainer, ITrainingObserver?>? observe = null)
    {
        // checkpoints are on by default; a benchmark measures steps, and saves only when the config asks (checkpoint.interval)
        if (!(options.Tree.TryGetValue("checkpoint", out var section) && section is Dictionary<string, object?> keys && keys.ContainsKey("interval")))
            options = options with { Checkpoint = options.Checkpoint with { Interval = 0 } };
        var t = options.Train;
        bool cuda = t.Device.StartsWith("cuda");
        int deviceIndex = t.Device.Contains(':') ? int.Parse(t.Device[(t.Device.IndexOf(':') + 1)..]) : 0;
        var memory = cuda ? DeviceMemory.Open(deviceIndex) : null;
        if (peakFlops <= 0 && memory is not null) peakFlops = ModelFlops.PeakBf16(memory.Name);

        using var trainer = new Trainer(options);
        double? modelState = Gib(memory?.UsedBytes);
        var clock = new Clock(warmup, warmup + timed, memory, cuda);
        using var timeline = cuda ? new LaunchTimeline(warmup, warmup + timed, deviceIndex) : null;
        var profile = new StepProfile(warmup + timed, profiled, cuda);
        trainer.Run(new Observers(clock, timeline, profile, observe?.Invoke(trainer)));   // the clock's sync comes before the timeline's first mark
        double? atEnd = Gib(memory?.UsedBytes);

        var plan = DataParallelPlan.For(options, 1);
        double tokensPerStep = (double)plan.MicroBatch * plan.GradAccum * t.SeqLen;
        double stepsPerSecond = timed / clock.Seconds;
        double flopsPerToken = ModelFlops.PerToken(options.Model, ModelInfo.Of(trainer.Model), t.SeqLen);
        double tokensPerSecond = stepsPerSecond * tokensPerStep;
        int? largest = fitMicroBatches.Length > 0 ? LargestMicroBatch(trainer, options, fitMicroBatches.Order().ToArray()) : null;
        var ac = t.ActivationCheckpointing;
        return new BenchmarkResult(options.Model.Arch.ToString(), ac.Kind.ToString().ToLowerInvariant() + (ac.Every > 1 ? $" every {ac.Every}" : ""), t.Precision, t.Device, memory?.Name ?? "cpu",
            plan.MicroBatch, t.SeqLen, plan.GradAccum, warmup, timed, stepsPerSecond, tokensPerSecond, flopsPerToken, peakFlops,
            peakFlops > 0 ? tokensPerSecond * flopsPerToken / peakFlops : null, modelState, clock.AfterWarmup, atEnd,
            profile.PerStep.ToDictionary(p => p.Key.ToString(), p => p.Value * 1e3), profile.Steps, largest, fitMicroBatches, trainer.Kernels.Description,
            cuda ? clock.HostLead * 1e3 : null, timeline?.Phases(), clock.Tensors / (double)timed, clock.FusedLaunches / (double)timed);
    }

    /// <summary>Tries one training step (forward, backward, optimizer) at each size, smallest first; the largest that ran.</summary>
    static int? LargestMicroBatch(Trainer trainer, TrainConfig options, int[] sizes)
    {
        int? largest = null;
        var device = trainer.Flat.Master.device;
        foreach (int size in sizes)
        {
            try
            {
                using (var scope = NewDisposeScope())
                {
                    var tokens = randint(options.Model.VocabSize, [size, options.Train.SeqLen], dtype: ScalarType.Int64, device: device);
                    Trainer.Loss(trainer.Model, tokens, tokens, options.Train.LossChunk).backward();
                    trainer.Optimizer.Step(0, 0).Dispose();
                    trainer.Flat.ZeroGrads();
                }
                if (device.type == DeviceType.CUDA) torch.cuda.synchronize();
                largest = size;
            }
            catch (Exception e) when (e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase))
            {
                trainer.Flat.ZeroGrads();
                break;
            }
            finally
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
            }
        }
        return largest;
    }

    static double? Gib(long? bytes) => bytes is { } b and >= 0 ? b / (double)(1L << 30) : null;

    /// <summary>
    /// Times steps (warmup, end]: from the end of the last warmup step, synchronised, to the log step's report (a host sync).
    /// Without the first sync the GPU's backlog of warmup work (the host runs ahead by up to a queue of launches) would be
    /// counted in the timed steps; the sync's wait is reported as the host's lead.
    /// </summary>
    sealed class Clock(int warmup, int end, DeviceMemory? memory, bool cuda) : ITrainingObserver
    {
        long _start;
        public double Seconds { get; private set; } = double.NaN;
        public double? AfterWarmup { get; private set; }

        /// <summary>Seconds the sync at the start waited for the GPU: how far the host had run ahead.</summary>
        public double HostLead { get; private set; }

        /// <summary>TorchSharp tensors created on this (the training) thread, and fused kernel launches, over the timed steps.</summary>
        public long Tensors { get; private set; }
        public long FusedLaunches { get; private set; }

        static long TensorsCreated
        {
            get
            {
                var created = DisposeScopeManager.Statistics.TensorStatistics;   // this thread's
                return created.CreatedInScopeCount + created.CreatedOutsideScopeCount;
            }
        }

        public void OnStep(int step)
        {
            if (step != warmup - 1) return;
            // allocations are issued by the host, so the reserve is current without a device sync
            AfterWarmup = Gib(memory?.UsedBytes);
            long before = Stopwatch.GetTimestamp();
            if (cuda) torch.cuda.synchronize();
            HostLead = Stopwatch.GetElapsedTime(before).TotalSeconds;
            (Tensors, FusedLaunches) = (-TensorsCreated, -KernelLaunches.Count);
            _start = Stopwatch.GetTimestamp();
        }

        public void OnReport(StepReport report)
        {
            if (report.Step != end || !double.IsNaN(Seconds)) return;
            Seconds = Stopwatch.GetElapsedTime(_start).TotalSeconds;
            (Tensors, FusedLaunches) = (Tensors + TensorsCreated, FusedLaunches + KernelLaunches.Count);
        }
    }
}
