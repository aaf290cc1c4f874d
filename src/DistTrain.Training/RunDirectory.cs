using System.Globalization;
using System.Text.Json;
using DistTrain.Training.Config;

namespace DistTrain.Training;

/// <summary>
/// A run's folder: runs/NAME-yyyyMMdd-HHmmss/ with config.yaml (the resolved config) and
/// metrics.jsonl (one JSON object per logged step). A new folder per run; nothing is overwritten.
/// </summary>
public sealed class RunDirectory : IDisposable
{
    readonly StreamWriter _metrics;

    RunDirectory(string path)
    {
        Path = path;
        _metrics = new StreamWriter(System.IO.Path.Combine(path, "metrics.jsonl")) { AutoFlush = true };
    }

    public string Path { get; }

    public static RunDirectory Create(TrainConfig config)
    {
        var stamp = DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);
        var root = System.IO.Path.GetFullPath(config.Train.RunDir);
        var path = System.IO.Path.Combine(root, $"{config.Train.Name}-{stamp}");
        for (int n = 2; Directory.Exists(path); n++)
            path = System.IO.Path.Combine(root, $"{config.Train.Name}-{stamp}-{n}");
        Directory.CreateDirectory(path);
        File.WriteAllText(System.IO.Path.Combine(path, "config.yaml"),
            $"# resolved from {config.Source}\n" + YamlTree.Write(config.Tree));
        return new RunDirectory(path);
    }

    public void Append(StepReport report) => _metrics.WriteLine(JsonSerializer.Serialize(report, StepReport.Json));

    public void Dispose() => _metrics.Dispose();
}
