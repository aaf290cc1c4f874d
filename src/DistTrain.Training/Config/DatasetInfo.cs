using System.Text.Json;

namespace DistTrain.Training.Config;

/// <summary>Reads what `disttrain prepare` recorded in dataset.json next to (or above) a data folder.</summary>
static class DatasetInfo
{
    public static int? EndOfText(string dataPath)
    {
        var dir = Directory.Exists(dataPath) ? dataPath : Path.GetDirectoryName(dataPath);
        for (int up = 0; up < 2 && dir is not null; up++, dir = Path.GetDirectoryName(dir))
        {
            var file = Path.Combine(dir, "dataset.json");
            if (!File.Exists(file)) continue;
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            if (doc.RootElement.TryGetProperty("end_of_text", out var eot)) return eot.GetInt32();
        }
        return null;
    }
}
