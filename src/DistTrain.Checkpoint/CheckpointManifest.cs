using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace DistTrain.Checkpoint;

/// <summary>One shard file of a checkpoint: its name inside the checkpoint folder, SHA-256 and size.</summary>
public sealed record ManifestFile(string Name, string Sha256, long Bytes)
{
    /// <summary>Describes dir/name as it is on disk now (streams the file once for the checksum).</summary>
    public static ManifestFile Of(string dir, string name)
    {
        string path = Path.Combine(dir, name);
        return new ManifestFile(name, Checksums.Sha256File(path), new FileInfo(path).Length);
    }
}

/// <summary>Where one tensor lives: its shard file, the absolute byte offset of its data in that file, its shape and safetensors dtype.</summary>
public sealed record ManifestTensor(string Name, string File, long Offset, long[] Shape, string Dtype)
{
    /// <summary>The index entries of every tensor in a safetensors shard named <paramref name="file"/>.</summary>
    public static IEnumerable<ManifestTensor> Of(string file, SafetensorsFile shard) =>
        shard.Entries.Select(e => new ManifestTensor(e.Name, file, e.DataOffset, e.Shape, e.Dtype));
}

/// <summary>manifest.json: everything needed to resume, and the index and checksums of the shard files.</summary>
public sealed record CheckpointManifest
{
    public const string CurrentFormat = "disttrain-ckpt-v1";
    public static readonly IReadOnlyList<string> SupportedFormats = [CurrentFormat];

    static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
    };

    public string Format { get; init; } = CurrentFormat;
    public required long Step { get; init; }
    public required long Tokens { get; init; }
    public required int WorldSize { get; init; }
    public DateTimeOffset CreatedUtc { get; init; } = DateTimeOffset.UtcNow;
    /// <summary>The run's resolved configuration as YAML text.</summary>
    public string Config { get; init; } = "";
    /// <summary>The model config with the official MUDDFormer config.json keys (<see cref="HfExport.ConfigJson"/>).</summary>
    public JsonObject? ModelConfig { get; init; }
    /// <summary>Data loader positions: a JSON blob owned by the data component.</summary>
    public string DataCursors { get; init; } = "{}";
    /// <summary>Scheduler, RNG and optimizer scalars (lr, optimizer step count, seeds...).</summary>
    public Dictionary<string, double> Scalars { get; init; } = [];
    public Dictionary<string, string> Extra { get; init; } = [];
    public IReadOnlyList<ManifestFile> Files { get; init; } = [];
    public IReadOnlyList<ManifestTensor> Tensors { get; init; } = [];

    /// <summary>Writes dir/manifest.json and fsyncs it. Write it last: its presence marks the folder finished.</summary>
    public void Write(string dir)
    {
        using var file = new FileStream(Path.Combine(dir, CheckpointDirectory.ManifestFileName), FileMode.Create, FileAccess.Write, FileShare.None);
        JsonSerializer.Serialize(file, this, Options);
        file.Flush(flushToDisk: true);
    }

    public static CheckpointManifest Read(string dir)
    {
        string path = Path.Combine(dir, CheckpointDirectory.ManifestFileName);
        if (!Directory.Exists(dir))
            throw new CheckpointException(File.Exists(dir)
                ? $"{dir}: is a file, not a checkpoint; give a checkpoint folder (RUN/checkpoints/step-NNNNNNNN)"
                : $"{dir}: no such folder; give a checkpoint folder (RUN/checkpoints/step-NNNNNNNN)");
        if (!File.Exists(path))
        {
            string latest = Path.Combine(dir, CheckpointDirectory.LatestFileName);
            if (File.Exists(latest))   // the root that holds the checkpoints, given where one checkpoint was asked for
                throw new CheckpointException($"{dir}: is a checkpoint root (checkpoint.dir), not a checkpoint; its latest is {Path.Combine(dir, File.ReadAllText(latest).Trim())}: give that folder or another step-N folder in {dir}");
            throw new CheckpointException($"{path}: not found; {dir} is not a finished checkpoint (a save may have crashed), use an older checkpoint");
        }
        string text = File.ReadAllText(path);
        try
        {
            using (var doc = JsonDocument.Parse(text))
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object)
                    throw new CheckpointException($"{path}: malformed: the top level is a JSON {doc.RootElement.ValueKind}, not an object; the file is corrupt, use an older checkpoint");
                string? format = doc.RootElement.TryGetProperty("format", out var f) && f.ValueKind == JsonValueKind.String ? f.GetString() : null;
                if (format is null || !SupportedFormats.Contains(format))
                    throw new CheckpointException($"{path}: format version '{format ?? "(none)"}' is not supported; this build reads {string.Join(", ", SupportedFormats)}; use the DistTrain version that wrote it");
            }
            return JsonSerializer.Deserialize<CheckpointManifest>(text, Options)
                ?? throw new CheckpointException($"{path}: malformed: the manifest is JSON null; the file is corrupt, use an older checkpoint");
        }
        catch (JsonException e)
        {
            throw new CheckpointException($"{path}: malformed manifest: {e.Message}; the file is corrupt, use an older checkpoint", e);
        }
    }

    /// <summary>
    /// Checks that every listed file exists with the listed size and SHA-256; that every safetensors file's
    /// header is valid; and that the tensor index agrees with those headers, both ways: each indexed tensor is
    /// in a listed file at the indexed offset with the indexed shape and dtype, and each tensor of a listed
    /// safetensors file is indexed.
    /// </summary>
    public void Verify(string dir)
    {
        string manifestPath = Path.Combine(dir, CheckpointDirectory.ManifestFileName);
        foreach (var file in Files)
        {
            if (file.Name != Path.GetFileName(file.Name) || file.Name is "." or "..")
                throw new CheckpointException($"{manifestPath}: file entry '{file.Name}' is not a plain file name; the manifest is corrupt, use an older checkpoint");
            string path = Path.Combine(dir, file.Name);
            if (!System.IO.File.Exists(path))
                throw new CheckpointException($"{path}: missing; the checkpoint is incomplete, use an older checkpoint");
            long size = new FileInfo(path).Length;
            if (size != file.Bytes)
                throw new CheckpointException($"{path}: size {size} bytes vs {file.Bytes} in the manifest; the file is truncated or corrupt, use an older checkpoint");
            string sha = Checksums.Sha256File(path);
            if (sha != file.Sha256)
                throw new CheckpointException($"{path}: checksum mismatch (sha256 {sha}, manifest {file.Sha256}): the file is corrupt, use an older checkpoint");
        }
        var listed = Files.Select(f => f.Name).ToHashSet();
        foreach (var tensor in Tensors)
            if (!listed.Contains(tensor.File))
                throw new CheckpointException($"{manifestPath}: tensor '{tensor.Name}' lives in '{tensor.File}', which the file list does not name; the manifest is corrupt, use an older checkpoint");
        VerifyIndex(dir, manifestPath);
    }

    /// <summary>The tensor index against the headers of the listed safetensors files (each header is validated as it is opened).</summary>
    void VerifyIndex(string dir, string manifestPath)
    {
        var indexed = Tensors.GroupBy(t => t.File).ToDictionary(g => g.Key, g => g.ToList());
        foreach (var file in Files.Where(f => f.Name.EndsWith(".safetensors", StringComparison.Ordinal)))
        {
            var shard = Safetensors.Open(Path.Combine(dir, file.Name));
            var entries = indexed.GetValueOrDefault(file.Name) ?? [];
            foreach (var tensor in entries)
            {
                if (!shard.Contains(tensor.Name))
                    throw new CheckpointException($"{manifestPath}: tensor '{tensor.Name}' is indexed in {file.Name}, whose header has no such tensor; the manifest is corrupt, use an older checkpoint");
                var entry = shard[tensor.Name];
                if (entry.DataOffset != tensor.Offset || !entry.Shape.SequenceEqual(tensor.Shape) || entry.Dtype != tensor.Dtype)
                    throw new CheckpointException(
                        $"{manifestPath}: tensor '{tensor.Name}' is indexed at byte {tensor.Offset}, shape [{string.Join(", ", tensor.Shape)}], {tensor.Dtype}; " +
                        $"{file.Name} holds it at byte {entry.DataOffset}, shape [{string.Join(", ", entry.Shape)}], {entry.Dtype}; the manifest is corrupt, use an older checkpoint");
            }
            var names = entries.Select(t => t.Name).ToHashSet();
            if (shard.Entries.FirstOrDefault(e => !names.Contains(e.Name)) is { } missing)
                throw new CheckpointException($"{manifestPath}: {file.Name} holds tensor '{missing.Name}', which the tensor index does not list; the manifest is corrupt, use an older checkpoint");
        }
    }
}
