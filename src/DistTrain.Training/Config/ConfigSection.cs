using System.Globalization;

namespace DistTrain.Training.Config;

/// <summary>
/// One mapping of a YAML config, read key by key. Every key is taken at most once; keys nobody
/// took are reported by <see cref="EnsureConsumed"/> with their full path, so a typo never
/// silently falls back to a default.
/// </summary>
public sealed class ConfigSection
{
    readonly string _source, _path;
    readonly Dictionary<string, object?> _values;
    readonly HashSet<string> _taken = [];

    public ConfigSection(string source, string path, Dictionary<string, object?> values)
    {
        (_source, _path, _values) = (source, path, values);
    }

    public string Where(string key) => $"{_source}: {(_path.Length == 0 ? "" : _path + ".")}{key}";

    public bool Has(string key) => _values.ContainsKey(key);

    public ConfigSection Section(string key)
    {
        _taken.Add(key);
        return _values.TryGetValue(key, out var v) switch
        {
            false => new ConfigSection(_source, Join(key), []),
            true when v is Dictionary<string, object?> map => new ConfigSection(_source, Join(key), map),
            true when v is null => new ConfigSection(_source, Join(key), []),
            _ => throw new ConfigException($"{Where(key)}: expected a mapping of keys, found '{v}'"),
        };
    }

    public string String(string key, string fallback) => Take(key, fallback, (s, _) => s);

    public int Int(string key, int fallback) => Take(key, fallback, (s, w) =>
        int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v
        : throw new ConfigException($"{w}: '{s}' is not a whole number"));

    public long Long(string key, long fallback) => Take(key, fallback, (s, w) =>
        long.TryParse(s.Replace("_", ""), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v
        : throw new ConfigException($"{w}: '{s}' is not a whole number"));

    public double Double(string key, double fallback) => Take(key, fallback, (s, w) =>
        double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? v
        : throw new ConfigException($"{w}: '{s}' is not a number"));

    public bool Bool(string key, bool fallback) => Take(key, fallback, (s, w) => s.ToLowerInvariant() switch
    {
        "true" or "yes" or "on" => true,
        "false" or "no" or "off" => false,
        _ => throw new ConfigException($"{w}: '{s}' is not true or false"),
    });

    /// <summary>A list of mappings (for example a manifest's nodes), each read as its own section.</summary>
    public IReadOnlyList<ConfigSection> RawList(string key)
    {
        _taken.Add(key);
        if (!_values.TryGetValue(key, out var raw) || raw is null) return [];
        if (raw is not List<object?> list) throw new ConfigException($"{Where(key)}: expected a list (- item per line)");
        return list.Select((item, i) => item is Dictionary<string, object?> map
            ? new ConfigSection(_source, $"{Join(key)}[{i}]", map)
            : throw new ConfigException($"{Where(key)}[{i}]: expected a mapping of keys, found '{item}'")).ToList();
    }

    /// <summary>A list of whole numbers, such as [0, 1, 2]; absent means empty.</summary>
    public IReadOnlyList<int> IntList(string key)
    {
        _taken.Add(key);
        if (!_values.TryGetValue(key, out var raw) || raw is null) return [];
        if (raw is not List<object?> list) throw new ConfigException($"{Where(key)}: expected a list such as [0, 1]");
        return list.Select(item => int.TryParse(item as string, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v
            : throw new ConfigException($"{Where(key)}: '{item}' is not a whole number")).ToList();
    }

    public bool? OptionalBool(string key) => Has(key) ? Bool(key, false) : null;

    /// <summary>One of <paramref name="choices"/> (case-insensitive), mapped to its value.</summary>
    public T Choice<T>(string key, T fallback, IReadOnlyDictionary<string, T> choices) => Take(key, fallback, (s, w) =>
        choices.TryGetValue(s.ToLowerInvariant(), out var v) ? v
        : throw new ConfigException($"{w}: '{s}' is not one of: {string.Join(", ", choices.Keys)}"));

    /// <summary>Throws for keys present in the file that no component read.</summary>
    public void EnsureConsumed(IEnumerable<string>? known = null)
    {
        var unknown = _values.Keys.Where(k => !_taken.Contains(k)).ToList();
        if (unknown.Count == 0) return;
        var knownList = known is null ? _taken.ToList() : known.ToList();
        throw new ConfigException($"{Where(unknown[0])}: unknown key; known keys here: {string.Join(", ", knownList.Order())}");
    }

    T Take<T>(string key, T fallback, Func<string, string, T> parse)
    {
        _taken.Add(key);
        if (!_values.TryGetValue(key, out var raw) || raw is null) return fallback;
        if (raw is not string s) throw new ConfigException($"{Where(key)}: expected a single value, found a {(raw is Dictionary<string, object?> ? "mapping" : "list")}");
        return parse(s.Trim(), Where(key));
    }

    string Join(string key) => _path.Length == 0 ? key : _path + "." + key;
}
