using System.Text;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace DistTrain.Checkpoint.Tests;

/// <summary>
/// Issue 13: a manifest whose checksums pass but whose tensor index disagrees with the files, or a
/// shard whose header is corrupt but whose checksum was recomputed, must not load.
/// </summary>
public class TensorIndexTests
{
    /// <summary>A verified checkpoint of two tensors in one shard.</summary>
    static string Save(string root)
    {
        string dir = Path.Combine(root, "step-00000001");
        Directory.CreateDirectory(dir);
        using var a = arange(12, ScalarType.Float32).reshape(3, 4);
        using var b = ones(5, ScalarType.BFloat16);
        Safetensors.Write(Path.Combine(dir, "shard.safetensors"), [("a", a), ("b", b)]);
        new CheckpointManifest
        {
            Step = 1, Tokens = 1, WorldSize = 1,
            Files = [ManifestFile.Of(dir, "shard.safetensors")],
            Tensors = ManifestTensor.Of("shard.safetensors", Safetensors.Open(Path.Combine(dir, "shard.safetensors"))).ToList(),
        }.Write(dir);
        CheckpointManifest.Read(dir).Verify(dir);
        return dir;
    }

    static void EditManifest(string dir, Action<JsonObject> edit)
    {
        string path = Path.Combine(dir, "manifest.json");
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(json);
        File.WriteAllText(path, json.ToJsonString());
    }

    static string Refused(string dir) => Assert.Throws<CheckpointException>(() => CheckpointManifest.Read(dir).Verify(dir)).Message;

    [Fact]
    public void AnIndexedOffsetOrShapeOrDtypeThatTheHeaderDoesNotHoldIsRefused()
    {
        using var root = new TempDir();
        foreach (var (field, value) in new (string, JsonNode)[] { ("offset", 8), ("shape", new JsonArray(4, 3)), ("dtype", "F16") })
        {
            string dir = Save(Path.Combine(root.Path, field));
            EditManifest(dir, m => m["tensors"]![1]![field] = value.DeepClone());
            string message = Refused(dir);
            Assert.StartsWith($"{Path.Combine(dir, "manifest.json")}: tensor 'b' is indexed at byte", message);
            Assert.Contains("shard.safetensors holds it at byte", message);
            Assert.EndsWith("the manifest is corrupt, use an older checkpoint", message);
        }
    }

    [Fact]
    public void ATensorTheIndexLeavesOutOrInventsIsRefused()
    {
        using var root = new TempDir();
        string left = Save(Path.Combine(root.Path, "left"));
        EditManifest(left, m => m["tensors"]!.AsArray().RemoveAt(0));
        Assert.Contains("shard.safetensors holds tensor 'a', which the tensor index does not list", Refused(left));

        string invented = Save(Path.Combine(root.Path, "invented"));
        EditManifest(invented, m => m["tensors"]![0]!["name"] = "c");
        Assert.Contains("tensor 'c' is indexed in shard.safetensors, whose header has no such tensor", Refused(invented));
    }

    [Fact]
    public void ACorruptHeaderIsRefusedEvenWhenItsChecksumWasRecomputed()
    {
        using var root = new TempDir();
        string dir = Save(root.Path);
        string shard = Path.Combine(dir, "shard.safetensors");
        var bytes = File.ReadAllBytes(shard);
        int at = 8 + Encoding.ASCII.GetString(bytes, 8, 64).IndexOf("\"shape\"", StringComparison.Ordinal) + 8;   // the "[" after "shape":
        bytes[at + 1] = (byte)'}';   // inside the header's JSON
        File.WriteAllBytes(shard, bytes);
        var file = ManifestFile.Of(dir, "shard.safetensors");
        EditManifest(dir, m => { m["files"]![0]!["sha256"] = file.Sha256; m["files"]![0]!["bytes"] = file.Bytes; });

        string message = Refused(dir);
        Assert.StartsWith($"{shard}: malformed safetensors header", message);
    }
}
