using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace DistTrain.Training.Diagnostics;

/// <summary>
/// The trainer's ActivitySource and Meter (exported when a TelemetrySession listens on "DistTrain.*").
/// Instruments are documented in docs/observability.md; names and units follow OpenTelemetry's conventions.
/// </summary>
public static class TrainingDiagnostics
{
    public const string Name = "DistTrain.Training";
    public static readonly ActivitySource Source = new(Name);
    static readonly Meter Meter = new(Name);
    static readonly ConcurrentDictionary<int, (DeviceMemory Memory, int Rank)> Devices = [];

    internal static readonly Histogram<double> StepDuration =
        Meter.CreateHistogram<double>("disttrain.train.step.duration", "s", "wall time of one optimizer step on this rank");
    internal static readonly Histogram<double> PhaseDuration =
        Meter.CreateHistogram<double>("disttrain.train.phase.duration", "s", "time in one phase of a step (disttrain.phase); on a GPU only traced steps, which synchronise the device");
    internal static readonly Counter<long> Tokens =
        Meter.CreateCounter<long>("disttrain.train.tokens", "{token}", "tokens this rank trained on");
    internal static readonly Counter<long> AllReduceBytes =
        Meter.CreateCounter<long>("disttrain.train.all_reduce.size", "By", "gradient bytes this rank all-reduced");
    internal static readonly Gauge<double> Throughput =
        Meter.CreateGauge<double>("disttrain.train.throughput", "{token}/s", "job tokens per second over the last log interval");
    internal static readonly Gauge<double> Mfu =
        Meter.CreateGauge<double>("disttrain.train.mfu", "1", "model FLOPs utilisation over the last log interval (needs a known peak: telemetry.peak_tflops or a known GPU)");
    internal static readonly Gauge<double> Loss =
        Meter.CreateGauge<double>("disttrain.train.loss", "1", "training loss, mean over the last log interval and all ranks");
    internal static readonly Gauge<double> ValLoss =
        Meter.CreateGauge<double>("disttrain.train.val_loss", "1", "validation loss at an eval step");
    internal static readonly Gauge<double> GradNorm =
        Meter.CreateGauge<double>("disttrain.train.grad_norm", "1", "global gradient norm before clipping, at the last step of the interval");
    internal static readonly Gauge<double> LearningRate =
        Meter.CreateGauge<double>("disttrain.train.learning_rate", "1", "learning rate of the last step");
    internal static readonly Counter<long> CheckpointBytes =
        Meter.CreateCounter<long>("disttrain.checkpoint.size", "By", "checkpoint bytes this rank wrote");
    internal static readonly Histogram<double> CheckpointDuration =
        Meter.CreateHistogram<double>("disttrain.checkpoint.duration", "s", "a save's stall (training waited) or background write (disttrain.checkpoint.stage)");
    internal static readonly Histogram<double> SnapshotStall =
        Meter.CreateHistogram<double>("disttrain.snapshot.stall", "s", "how long training waited for an in-memory snapshot (copies to host memory and the neighbour)");
    internal static readonly Counter<long> CheckpointFailures =
        Meter.CreateCounter<long>("disttrain.checkpoint.failures", "{save}", "saves that failed on this rank");

    static TrainingDiagnostics() =>
        Meter.CreateObservableGauge("disttrain.device.memory.usage", () => Devices.Values.Select(d =>
            new Measurement<long>(d.Memory.UsedBytes, new KeyValuePair<string, object?>("disttrain.rank", d.Rank))), "By",
            "device memory in use (NVML: the CUDA context and libtorch's cached reserve)");

    /// <summary>Reports this GPU's memory in use as a gauge from now on.</summary>
    internal static void Watch(int cudaDevice, int rank)
    {
        if (DeviceMemory.Open(cudaDevice) is { } memory) Devices[cudaDevice] = (memory, rank);
    }
}
