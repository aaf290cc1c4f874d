using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Checkpoint.Tests;

public class SafetensorsTests
{
    public static TheoryData<ScalarType, string> Dtypes => new()
    {
        { ScalarType.Float32, "F32" }, { ScalarType.Float64, "F64" }, { ScalarType.BFloat16, "BF16" }, { ScalarType.Float16, "F16" },
        { ScalarType.Int64, "I64" }, { ScalarType.Int32, "I32" }, { ScalarType.Byte, "U8" },
    };

    [Theory]
    [MemberData(nameof(Dtypes))]
    public void RoundTripKeepsDtypeShapeAndBytes(ScalarType type, string name)
    {
        using var dir = new TempDir();
        manual_seed(3);
        using var a = (randn(3, 5) * 50).to(type);
        using var b = (randn(7) * 50).to(type);
        using var scalar = tensor(42).to(type).reshape();
        string path = dir.File("x.safetensors");
        Safetensors.Write(path, [("a", a), ("b.c", b), ("s", scalar)], new Dictionary<string, string> { ["format"] = "pt" });

        var file = Safetensors.Open(path);
        Assert.Equal(["a", "b.c", "s"], file.Entries.Select(e => e.Name));
        Assert.All(file.Entries, e => Assert.Equal(name, e.Dtype));
        Assert.Equal("pt", file.Metadata["format"]);
        foreach (var (key, expected) in new[] { ("a", a), ("b.c", b), ("s", scalar) })
        {
            using var read = file.Read(key);
            Assert.Equal(type, read.dtype);
            Assert.Equal(expected.shape, read.shape);
            Assert.Equal(expected.bytes.ToArray(), read.bytes.ToArray());
        }
    }

    [Fact]
    public void Bf16BitPatternsSurviveExactly()
    {
        using var dir = new TempDir();
        // 1.0, -2.0, +inf, NaN, -0, smallest subnormal, largest finite
        ushort[] bits = [0x3F80, 0xC000, 0x7F80, 0x7FC1, 0x8000, 0x0001, 0x7F7F];
        var raw = new byte[bits.Length * 2];
        for (int i = 0; i < bits.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(raw.AsSpan(2 * i), bits[i]);
        using var t = empty([bits.Length], dtype: ScalarType.BFloat16);
        t.bytes = raw;
        string path = dir.File("bf16.safetensors");
        Safetensors.Write(path, [("t", t)]);

        var file = Safetensors.Open(path);
        var onDisk = File.ReadAllBytes(path).AsSpan((int)file["t"].DataOffset, raw.Length).ToArray();
        Assert.Equal(raw, onDisk);
        using var read = file.Read("t");
        Assert.Equal(raw, read.bytes.ToArray());
        Assert.Equal([1f, -2f], read[..2].to(ScalarType.Float32).data<float>().ToArray());
    }

    /// <summary>Reads the header with a parser written from the spec alone, not with Safetensors.Open.</summary>
    [Fact]
    public void HeaderFollowsTheSpec()
    {
        using var dir = new TempDir();
        using var a = tensor(new float[] { 1.5f, -2f, 3.25f }).reshape(3, 1);
        using var b = tensor(new long[] { 7, -9 });
        using var c = tensor(new byte[] { 1, 2, 3, 4, 5 });
        string path = dir.File("spec.safetensors");
        Safetensors.Write(path, [("a", a), ("b", b), ("c", c)], new Dictionary<string, string> { ["step"] = "12" });

        var bytes = File.ReadAllBytes(path);
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0, (8 + (long)n) % 8);                                  // data section 8-byte aligned
        string header = Encoding.UTF8.GetString(bytes, 8, (int)n);
        Assert.StartsWith("{", header);
        Assert.Equal(header.TrimEnd(' ').Length, header.TrimEnd().Length);   // padding is spaces only
        using var doc = JsonDocument.Parse(header);
        var root = doc.RootElement;
        Assert.Equal(["__metadata__", "a", "b", "c"], root.EnumerateObject().Select(p => p.Name));
        Assert.Equal("12", root.GetProperty("__metadata__").GetProperty("step").GetString());
        (string Name, string Dtype, long[] Shape, long Begin, long End)[] expected =
            [("a", "F32", [3, 1], 0, 12), ("b", "I64", [2], 12, 28), ("c", "U8", [5], 28, 33)];
        foreach (var e in expected)
        {
            var entry = root.GetProperty(e.Name);
            Assert.Equal(["dtype", "shape", "data_offsets"], entry.EnumerateObject().Select(p => p.Name));
            Assert.Equal(e.Dtype, entry.GetProperty("dtype").GetString());
            Assert.Equal(e.Shape, entry.GetProperty("shape").EnumerateArray().Select(x => x.GetInt64()));
            Assert.Equal([e.Begin, e.End], entry.GetProperty("data_offsets").EnumerateArray().Select(x => x.GetInt64()));
        }
        long data = 8 + (long)n;
        Assert.Equal(data + 33, bytes.Length);                               // data starts right after the header, nothing trails
        Assert.Equal(-2f, BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan((int)data + 4)));
        Assert.Equal(-9L, BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan((int)data + 20)));
        Assert.Equal(5, bytes[data + 32]);
        Assert.Equal(data, Safetensors.Open(path).DataStart);
    }

    [Fact]
    public void TruncatedFileIsRefusedNamingTheFile()
    {
        using var dir = new TempDir();
        string path = WriteSample(dir);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^3]);
        var e = Assert.Throws<CheckpointException>(() => Safetensors.Open(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("truncated", e.Message);
        Assert.Contains("use an older checkpoint", e.Message);

        File.WriteAllBytes(path, bytes[..5]);
        Assert.Contains("truncated", Assert.Throws<CheckpointException>(() => Safetensors.Open(path)).Message);
    }

    [Fact]
    public void HeaderLengthBeyondTheFileIsRefused()
    {
        using var dir = new TempDir();
        string path = WriteSample(dir);
        var bytes = File.ReadAllBytes(path);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)bytes.Length);
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<CheckpointException>(() => Safetensors.Open(path));
        Assert.Contains(path, e.Message);
        Assert.Contains($"header length {bytes.Length} reaches beyond the file", e.Message);
    }

    [Fact]
    public void OverlappingOffsetsAreRefused()
    {
        using var dir = new TempDir();
        string path = dir.File("overlap.safetensors");
        WriteRaw(path, """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", new byte[12]);
        var e = Assert.Throws<CheckpointException>(() => Safetensors.Open(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("tensor 'b' data [4, 12) overlaps tensor 'a'", e.Message);
    }

    [Theory]
    [InlineData("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]""", 8, "malformed safetensors header")]
    [InlineData("""[1, 2]""", 0, "malformed safetensors header: the header is a JSON Array")]
    [InlineData("""{"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}}""", 8, "dtype 'Q7', which this reader does not know")]
    [InlineData("""{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", 8, "spans 8 bytes, but shape [3] of F32 needs 12")]
    [InlineData("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""", 16, "gap in the data section")]
    [InlineData("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 12, "4 trailing bytes")]
    [InlineData("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 6, "truncated: the header needs 8 data bytes, the file holds 6")]
    public void InvalidHeadersAreRefusedNamingTheFileAndProblem(string header, int dataBytes, string problem)
    {
        using var dir = new TempDir();
        string path = dir.File("bad.safetensors");
        WriteRaw(path, header, new byte[dataBytes]);
        var e = Assert.Throws<CheckpointException>(() => Safetensors.Open(path));
        Assert.StartsWith(path + ":", e.Message);
        Assert.Contains(problem, e.Message);
    }

    [Fact]
    public void ReadRefusesAFileTruncatedAfterOpen()
    {
        using var dir = new TempDir();
        string path = WriteSample(dir);
        var file = Safetensors.Open(path);
        File.WriteAllBytes(path, File.ReadAllBytes(path)[..^4]);
        var e = Assert.Throws<CheckpointException>(() => file.Read("w"));
        Assert.Contains(path, e.Message);
        Assert.Contains("changed size", e.Message);
    }

    static string WriteSample(TempDir dir)
    {
        string path = dir.File("sample.safetensors");
        using var w = arange(12, dtype: ScalarType.Float32).reshape(3, 4);
        using var b = arange(5, dtype: ScalarType.Int64);
        Safetensors.Write(path, [("w", w), ("b", b)]);
        return path;
    }

    static void WriteRaw(string path, string header, byte[] data)
    {
        var json = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + json.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)json.Length);
        json.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + json.Length);
        File.WriteAllBytes(path, bytes);
    }
}
