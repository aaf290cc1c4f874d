using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using DistTrain.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Checkpoint;

/// <summary>One tensor's header entry. Begin/End are relative to the data section; DataOffset is absolute in the file.</summary>
/// <summary>
/// A tensor's bytes in host memory: safetensors dtype name (F32, BF16, ...), shape and the address of the
/// first byte. Whoever holds one keeps that memory alive and unchanged until the write returns.
/// </summary>
public readonly record struct HostTensor(string Name, string Dtype, long[] Shape, nint Address)
{
    public long Bytes => Shape.Aggregate(Safetensors.ElementSize(Dtype), (n, d) => checked(n * d));
}

public sealed record SafetensorsEntry(string Name, string Dtype, long[] Shape, long Begin, long End, long DataOffset)
{
    public long ByteCount => End - Begin;
}

// The format: an 8-byte little-endian header length n, then n bytes of UTF-8 JSON
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the raw
// little-endian tensor bytes, offsets relative to the byte after the header. Written by hand: no .NET library reads it.
public static class Safetensors
{
    internal const string MetadataKey = "__metadata__";
    // The reference implementation refuses headers above 100 MB.
    const long MaxHeaderBytes = 100_000_000;

    static readonly Dictionary<string, (ScalarType Type, int Size)> Dtypes = new()
    {
        ["F64"] = (ScalarType.Float64, 8),
        ["F32"] = (ScalarType.Float32, 4),
        ["BF16"] = (ScalarType.BFloat16, 2),
        ["F16"] = (ScalarType.Float16, 2),
        ["I64"] = (ScalarType.Int64, 8),
        ["I32"] = (ScalarType.Int32, 4),
        ["U8"] = (ScalarType.Byte, 1),
    };

    public static IReadOnlyCollection<string> SupportedDtypes => Dtypes.Keys;

    /// <summary>The safetensors dtype name of a TorchSharp scalar type (F32, BF16, ...).</summary>
    public static string DtypeName(ScalarType type) =>
        Dtypes.FirstOrDefault(d => d.Value.Type == type).Key
        ?? throw new ArgumentException($"dtype {type} cannot be stored; supported: {string.Join(", ", Dtypes.Keys)}; convert the tensor first");

    /// <summary>Bytes per element of a safetensors dtype name.</summary>
    public static long ElementSize(string dtype) => Dtypes.TryGetValue(dtype, out var d) ? d.Size
        : throw new ArgumentException($"safetensors dtype '{dtype}' is not supported; supported: {string.Join(", ", Dtypes.Keys)}");

    internal static bool TryDtype(string name, out ScalarType type, out int size)
    {
        bool found = Dtypes.TryGetValue(name, out var d);
        (type, size) = d;
        return found;
    }

    /// <summary>Writes CPU tensors in the given order, contiguous, and fsyncs the file before returning.</summary>
    public static void Write(string path, IReadOnlyList<(string Name, Tensor Tensor)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var copies = new List<Tensor>();
        try
        {
            var host = new List<HostTensor>();
            foreach (var (name, tensor) in tensors)
            {
                if (tensor.device_type != DeviceType.CPU)
                    throw new ArgumentException($"{path}: tensor '{name}' is on {tensor.device}; copy it to the CPU first");
                var contiguous = tensor.detach().contiguous();
                copies.Add(contiguous);
                host.Add(new HostTensor(name, DtypeName(tensor.dtype), tensor.shape, TensorMemory.Address(contiguous)));
            }
            Write(path, host, metadata);
        }
        finally
        {
            foreach (var c in copies) c.Dispose();
        }
    }

    /// <summary>
    /// Writes tensors from host memory in the given order and fsyncs the file before returning. Touches
    /// no TorchSharp object, so a background thread can write what the training thread copied out.
    /// </summary>
    public static unsafe void Write(string path, IReadOnlyList<HostTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("safetensors stores little-endian bytes; this host is big-endian");
        var names = new HashSet<string>();
        var header = new MemoryStream();
        using (var json = new Utf8JsonWriter(header))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject(MetadataKey);
                foreach (var (key, value) in metadata) json.WriteString(key, value);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var tensor in tensors)
            {
                if (tensor.Name == MetadataKey || !names.Add(tensor.Name))
                    throw new ArgumentException($"{path}: tensor name '{tensor.Name}' is reserved or used twice; give every tensor a unique name");
                long bytes = tensor.Bytes;
                json.WriteStartObject(tensor.Name);
                json.WriteString("dtype", tensor.Dtype);
                json.WriteStartArray("shape");
                foreach (long d in tensor.Shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + bytes);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += bytes;
            }
            json.WriteEndObject();
        }
        // Pad with spaces so the data section starts 8-byte aligned, as the reference implementation does.
        while ((8 + header.Length) % 8 != 0) header.WriteByte((byte)' ');

        using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 1 << 20);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
        file.Write(length);
        header.Position = 0;
        header.CopyTo(file);
        const long Chunk = 1 << 30;   // a span is int-sized; a 1.4B model's fp32 slice is 5.6 GB
        foreach (var tensor in tensors)
            for (long done = 0; done < tensor.Bytes; done += Chunk)
                file.Write(new ReadOnlySpan<byte>((byte*)tensor.Address + done, (int)Math.Min(Chunk, tensor.Bytes - done)));
        file.Flush(flushToDisk: true);
    }

    /// <summary>Reads and validates the header; tensors are read on demand with <see cref="SafetensorsFile.Read"/>.</summary>
    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path))
            throw new CheckpointException($"{path}: not found; check the path or use an older checkpoint");
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        long fileLength = file.Length;
        if (fileLength < 8)
            throw new CheckpointException($"{path}: truncated: {fileLength} bytes, shorter than the 8-byte header length; the file is corrupt, use an older checkpoint");
        Span<byte> lengthBytes = stackalloc byte[8];
        file.ReadExactly(lengthBytes);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength > (ulong)(fileLength - 8))
            throw new CheckpointException($"{path}: header length {headerLength} reaches beyond the file ({fileLength} bytes); the file is truncated or not safetensors, use an older checkpoint");
        if (headerLength > MaxHeaderBytes)
            throw new CheckpointException($"{path}: header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit; the file is corrupt or not safetensors");
        var headerBytes = new byte[headerLength];
        file.ReadExactly(headerBytes);
        long dataStart = 8 + (long)headerLength;
        long dataLength = fileLength - dataStart;

        var entries = new List<SafetensorsEntry>();
        var metadata = new Dictionary<string, string>();
        try
        {
            using var doc = JsonDocument.Parse(headerBytes);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw Malformed(path, $"the header is a JSON {doc.RootElement.ValueKind}, not an object");
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                if (property.Name == MetadataKey)
                {
                    if (property.Value.ValueKind != JsonValueKind.Object)
                        throw Malformed(path, $"{MetadataKey} is not an object of strings");
                    foreach (var m in property.Value.EnumerateObject())
                        metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : throw Malformed(path, $"{MetadataKey}.{m.Name} is not a string");
                    continue;
                }
                entries.Add(ParseEntry(path, property, dataStart));
            }
        }
        catch (JsonException e)
        {
            throw Malformed(path, e.Message, e);
        }
        catch (InvalidOperationException e)
        {
            throw Malformed(path, e.Message, e);
        }
        CheckLayout(path, entries, dataLength);
        return new SafetensorsFile(path, entries, metadata, dataStart, fileLength);
    }

    static SafetensorsEntry ParseEntry(string path, JsonProperty property, long dataStart)
    {
        string name = property.Name;
        var value = property.Value;
        if (value.ValueKind != JsonValueKind.Object)
            throw Malformed(path, $"tensor '{name}' is not an object");
        if (!value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw Malformed(path, $"tensor '{name}' has no string 'dtype'");
        string dtype = dtypeElement.GetString()!;
        if (!TryDtype(dtype, out _, out int elementSize))
            throw new CheckpointException($"{path}: tensor '{name}' has dtype '{dtype}', which this reader does not know (supported: {string.Join(", ", Dtypes.Keys)}); convert the file or extend Safetensors");
        if (!value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw Malformed(path, $"tensor '{name}' has no 'shape' array");
        var shape = shapeElement.EnumerateArray().Select(d => d.TryGetInt64(out long n) && n >= 0 ? n : throw Malformed(path, $"tensor '{name}' has a shape entry {d} that is not a non-negative integer")).ToArray();
        if (!value.TryGetProperty("data_offsets", out var offsets) || offsets.ValueKind != JsonValueKind.Array || offsets.GetArrayLength() != 2
            || !offsets[0].TryGetInt64(out long begin) || !offsets[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw Malformed(path, $"tensor '{name}' needs 'data_offsets' [begin, end] with 0 <= begin <= end");
        long expected = elementSize;
        foreach (long d in shape) expected = checked(expected * d);
        if (end - begin != expected)
            throw new CheckpointException($"{path}: tensor '{name}' spans {end - begin} bytes, but shape [{string.Join(", ", shape)}] of {dtype} needs {expected}; the file is corrupt, use an older checkpoint");
        return new SafetensorsEntry(name, dtype, shape, begin, end, dataStart + begin);
    }

    /// <summary>Data must tile [0, dataLength) exactly: no overlaps, no gaps, nothing past the end (the reference implementation's rule).</summary>
    static void CheckLayout(string path, List<SafetensorsEntry> entries, long dataLength)
    {
        long cursor = 0;
        string? previous = null;
        foreach (var e in entries.OrderBy(e => e.Begin).ThenBy(e => e.End))
        {
            if (e.Begin < cursor)
                throw new CheckpointException($"{path}: tensor '{e.Name}' data [{e.Begin}, {e.End}) overlaps tensor '{previous}' (ends at {cursor}); the file is corrupt, use an older checkpoint");
            if (e.Begin > cursor)
                throw new CheckpointException($"{path}: gap in the data section before tensor '{e.Name}' (bytes [{cursor}, {e.Begin}) belong to no tensor); the file is corrupt, use an older checkpoint");
            cursor = e.End;
            previous = e.Name;
        }
        if (cursor > dataLength)
            throw new CheckpointException($"{path}: truncated: the header needs {cursor} data bytes, the file holds {dataLength}; the file is incomplete, use an older checkpoint");
        if (cursor < dataLength)
            throw new CheckpointException($"{path}: {dataLength - cursor} trailing bytes after the last tensor (data section {dataLength} bytes, tensors end at {cursor}); the file is corrupt, use an older checkpoint");
    }

    static CheckpointException Malformed(string path, string problem, Exception? inner = null)
    {
        string message = $"{path}: malformed safetensors header: {problem}; the file is corrupt or not safetensors, use an older checkpoint";
        return inner is null ? new CheckpointException(message) : new CheckpointException(message, inner);
    }
}

/// <summary>A validated safetensors file: its header, read once; tensor data is read on demand.</summary>
public sealed class SafetensorsFile
{
    readonly Dictionary<string, SafetensorsEntry> _byName;
    readonly long _fileLength;

    internal SafetensorsFile(string path, IReadOnlyList<SafetensorsEntry> entries, IReadOnlyDictionary<string, string> metadata, long dataStart, long fileLength)
    {
        Path = path;
        Entries = entries;
        Metadata = metadata;
        DataStart = dataStart;
        _fileLength = fileLength;
        _byName = entries.ToDictionary(e => e.Name);
    }

    public string Path { get; }

    /// <summary>Header entries in header order.</summary>
    public IReadOnlyList<SafetensorsEntry> Entries { get; }

    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Absolute offset of the data section: 8 + header length.</summary>
    public long DataStart { get; }

    public SafetensorsEntry this[string name] => _byName.TryGetValue(name, out var e) ? e
        : throw new CheckpointException($"{Path}: no tensor named '{name}' (the file holds {_byName.Count}); check the name or the checkpoint's tensor index");

    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>Reads one tensor into a new CPU tensor of its stored dtype and shape.</summary>
    public Tensor Read(string name)
    {
        var entry = this[name];
        Safetensors.TryDtype(entry.Dtype, out var type, out _);
        using var file = new FileStream(Path, FileMode.Open, FileAccess.Read, FileShare.Read);
        if (file.Length != _fileLength)
            throw new CheckpointException($"{Path}: the file changed size since it was opened ({_fileLength} -> {file.Length} bytes); it is being rewritten or was truncated, open it again");
        var bytes = new byte[entry.ByteCount];
        file.Position = entry.DataOffset;
        file.ReadExactly(bytes);
        var tensor = empty(entry.Shape, dtype: type);
        if (bytes.Length > 0) tensor.bytes = bytes;
        return tensor;
    }
}
