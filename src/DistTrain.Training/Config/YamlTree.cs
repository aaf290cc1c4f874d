using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace DistTrain.Training.Config;

/// <summary>
/// A YAML config as nested dictionaries of strings (scalars stay text until a component reads
/// them with its own type), plus `--set a.b=value` overrides applied before anything is read.
/// </summary>
public static class YamlTree
{
    /// <param name="what">what the file is and how to pass another: the option and an example</param>
    public static Dictionary<string, object?> Load(string path, string what = "config file not found; pass --config with a path such as configs/tiny-muddformer.yaml")
    {
        if (Directory.Exists(path)) throw new ConfigException($"{path}: is a folder, not a YAML file; {what[(what.IndexOf(';') + 1)..].Trim()}");
        if (!File.Exists(path)) throw new ConfigException($"{path}: {what}");
        try { return Parse(File.ReadAllText(path), path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"{path}: cannot be read ({e.Message}); check its permissions");
        }
    }

    public static Dictionary<string, object?> Parse(string text, string source)
    {
        var stream = new YamlStream();
        try { stream.Load(new StringReader(text)); }
        catch (YamlException e) { throw new ConfigException($"{source}:{e.Start.Line}:{e.Start.Column}: not valid YAML: {e.Message}"); }
        if (stream.Documents.Count == 0) return [];
        return stream.Documents[0].RootNode switch
        {
            YamlMappingNode map => ToMap(map, source, ""),
            YamlScalarNode { Value: null or "" } => [],
            _ => throw new ConfigException($"{source}: the top level must be a mapping (model:, data:, train:, optim:)"),
        };
    }

    /// <summary>Applies "a.b.c=value" (value parsed as YAML, so lists and numbers work) to the tree.</summary>
    public static void Set(Dictionary<string, object?> root, string assignment)
    {
        int eq = assignment.IndexOf('=');
        if (eq <= 0) throw new ConfigException($"--set {assignment}: expected key=value, for example --set train.steps=100");
        var keys = assignment[..eq].Trim().Split('.');
        var node = root;
        for (int i = 0; i < keys.Length - 1; i++)
        {
            if (!node.TryGetValue(keys[i], out var child) || child is null)
                node[keys[i]] = child = new Dictionary<string, object?>();
            node = child as Dictionary<string, object?>
                ?? throw new ConfigException($"--set {assignment}: '{string.Join('.', keys[..(i + 1)])}' is a value, not a section");
        }
        var parsed = Parse($"v: {assignment[(eq + 1)..]}", $"--set {assignment}");
        node[keys[^1]] = parsed.GetValueOrDefault("v");
    }

    /// <summary>Writes the tree back as YAML (the resolved config of a run).</summary>
    public static string Write(Dictionary<string, object?> root)
    {
        var sb = new System.Text.StringBuilder();
        Emit(root, 0);
        return sb.ToString();

        void Emit(Dictionary<string, object?> map, int indent)
        {
            foreach (var (k, v) in map)
            {
                sb.Append(' ', indent).Append(k).Append(':');
                switch (v)
                {
                    case Dictionary<string, object?> child: sb.AppendLine(); Emit(child, indent + 2); break;
                    case List<object?> list: sb.Append(" [").Append(string.Join(", ", list.Select(Quote))).AppendLine("]"); break;
                    default: sb.Append(' ').AppendLine(Quote(v)); break;
                }
            }
        }
        static string Quote(object? v) => v switch
        {
            null => "null",
            string s when s.Length == 0 || s.IndexOfAny([':', '#', '\'', '"', '[', ']', '{', '}', ',']) >= 0 || s != s.Trim() => $"'{s.Replace("'", "''")}'",
            _ => v.ToString()!,
        };
    }

    static Dictionary<string, object?> ToMap(YamlMappingNode map, string source, string path)
    {
        var result = new Dictionary<string, object?>();
        foreach (var (keyNode, valueNode) in map.Children)
        {
            var key = ((YamlScalarNode)keyNode).Value ?? "";
            var full = path.Length == 0 ? key : path + "." + key;
            if (!result.TryAdd(key, ToValue(valueNode, source, full)))
                throw new ConfigException($"{source}: {full}: key given twice");
        }
        return result;
    }

    static object? ToValue(YamlNode node, string source, string path) => node switch
    {
        YamlMappingNode m => ToMap(m, source, path),
        YamlSequenceNode s => s.Children.Select(c => ToValue(c, source, path)).ToList(),
        YamlScalarNode { Value: "~" or "null" } => null,
        YamlScalarNode sc => sc.Value,
        _ => throw new ConfigException($"{source}: {path}: unsupported YAML node"),
    };
}
