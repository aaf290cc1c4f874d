using System.Diagnostics.Metrics;

namespace DistTrain.Distributed;

/// <summary>The communicators' meter; listen with a MeterListener or dotnet-counters on <see cref="MeterName"/>.</summary>
public static class DistributedDiagnostics
{
    public const string MeterName = "DistTrain.Distributed";
    static readonly Meter Meter = new(MeterName);

    internal static readonly Counter<long> Bytes =
        Meter.CreateCounter<long>("disttrain.comm.bytes", "By", "tensor bytes through ring collectives on this rank, by op");
    internal static readonly Histogram<double> Duration =
        Meter.CreateHistogram<double>("disttrain.comm.duration", "s", "wall time of one ring collective on this rank, by op");
}
