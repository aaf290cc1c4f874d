using System.Diagnostics.Metrics;

namespace DistTrain.Data;

/// <summary>The data component's meter; listen with a MeterListener or dotnet-counters on <see cref="MeterName"/>.</summary>
public static class DataDiagnostics
{
    public const string MeterName = "DistTrain.Data";
    static readonly Meter Meter = new(MeterName);

    internal static readonly Counter<long> Windows =
        Meter.CreateCounter<long>("disttrain.data.windows", "{window}", "windows handed to the trainer");
    internal static readonly Counter<long> RowGroups =
        Meter.CreateCounter<long>("disttrain.data.row_groups", "{row_group}", "Parquet row groups decoded");
    internal static readonly Counter<double> Wait =
        Meter.CreateCounter<double>("disttrain.data.wait", "s", "time TryNext blocked because read-ahead was empty: the trainer starved for data");
}
