using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Checkpoint.Tests;

public class CheckpointTests
{
    /// <summary>A whole save as the trainer will do it: temp folder, shard, manifest last, commit, latest.</summary>
    static string Save(string root, int step, bool pointLatest = true)
    {
        string temp = CheckpointDirectory.BeginTemp(root, step);
        using var w = full(4, 4, (float)step);
        Safetensors.Write(Path.Combine(temp, "rank-00000.safetensors"), [("w", w)]);
        var shard = Safetensors.Open(Path.Combine(temp, "rank-00000.safetensors"));
        new CheckpointManifest
        {
            Step = step, Tokens = step * 1024L, WorldSize = 1, Config = "model:\n  size: tiny\n",
            ModelConfig = new JsonObject { ["dim"] = 32 },
            DataCursors = """{"shard":3,"offset":17}""",
            Scalars = new() { ["lr"] = 3e-4, ["adam.step"] = step },
            Extra = new() { ["rng"] = "abc" },
            Files = [ManifestFile.Of(temp, "rank-00000.safetensors")],
            Tensors = ManifestTensor.Of("rank-00000.safetensors", shard).ToList(),
        }.Write(temp);
        string final = Path.Combine(root, CheckpointDirectory.StepName(step));
        CheckpointDirectory.Commit(temp, final);
        if (pointLatest) CheckpointDirectory.PointLatest(root, CheckpointDirectory.StepName(step));
        return final;
    }

    [Fact]
    public void ManifestRoundTripsAndVerifies()
    {
        using var dir = new TempDir();
        string ckpt = Save(dir.Path, 1234);
        Assert.Equal(Path.Combine(dir.Path, "step-00001234"), ckpt);
        Assert.Contains("\"world_size\": 1", File.ReadAllText(Path.Combine(ckpt, "manifest.json")));

        var m = CheckpointManifest.Read(ckpt);
        Assert.Equal("disttrain-ckpt-v1", m.Format);
        Assert.Equal(1234, m.Step);
        Assert.Equal(1234 * 1024L, m.Tokens);
        Assert.Equal(3e-4, m.Scalars["lr"]);
        Assert.Equal("abc", m.Extra["rng"]);
        Assert.Equal(32, (int)m.ModelConfig!["dim"]!);
        Assert.Equal("""{"shard":3,"offset":17}""", m.DataCursors);
        var file = Assert.Single(m.Files);
        Assert.Equal(new FileInfo(Path.Combine(ckpt, file.Name)).Length, file.Bytes);
        Assert.Matches("^[0-9a-f]{64}$", file.Sha256);
        var t = Assert.Single(m.Tensors);
        Assert.Equal(("w", "F32"), (t.Name, t.Dtype));
        Assert.Equal([4L, 4], t.Shape);
        Assert.Equal(Safetensors.Open(Path.Combine(ckpt, t.File)).DataStart, t.Offset);
        m.Verify(ckpt);
    }

    [Fact]
    public void Sha256MatchesAKnownDigest()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("abc"), "abc");
        Assert.Equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", Checksums.Sha256File(dir.File("abc")));
    }

    [Fact]
    public void AFlippedDataByteFailsVerifyWithAChecksumMismatch()
    {
        using var dir = new TempDir();
        string ckpt = Save(dir.Path, 5);
        string shard = Path.Combine(ckpt, "rank-00000.safetensors");
        var bytes = File.ReadAllBytes(shard);
        bytes[^5] ^= 0x40;
        File.WriteAllBytes(shard, bytes);

        var e = Assert.Throws<CheckpointException>(() => CheckpointManifest.Read(ckpt).Verify(ckpt));
        Assert.StartsWith(shard + ": checksum mismatch", e.Message);
        Assert.Contains("the file is corrupt, use an older checkpoint", e.Message);
    }

    [Fact]
    public void ATruncatedOrMissingShardFailsVerify()
    {
        using var dir = new TempDir();
        string ckpt = Save(dir.Path, 5);
        string shard = Path.Combine(ckpt, "rank-00000.safetensors");
        long size = new FileInfo(shard).Length;
        File.WriteAllBytes(shard, File.ReadAllBytes(shard)[..^10]);
        var e = Assert.Throws<CheckpointException>(() => CheckpointManifest.Read(ckpt).Verify(ckpt));
        Assert.StartsWith($"{shard}: size {size - 10} bytes vs {size} in the manifest", e.Message);

        File.Delete(shard);
        e = Assert.Throws<CheckpointException>(() => CheckpointManifest.Read(ckpt).Verify(ckpt));
        Assert.StartsWith($"{shard}: missing", e.Message);
    }

    [Fact]
    public void ManifestErrorsNameTheFileAndWhatToDo()
    {
        using var dir = new TempDir();
        string manifest = Path.Combine(dir.Path, "manifest.json");
        var e = Assert.Throws<CheckpointException>(() => CheckpointManifest.Read(dir.Path));
        Assert.StartsWith($"{manifest}: not found", e.Message);

        File.WriteAllText(manifest, """{"format": "disttrain-ckpt-v1", "step": """);
        e = Assert.Throws<CheckpointException>(() => CheckpointManifest.Read(dir.Path));
        Assert.StartsWith($"{manifest}: malformed", e.Message);

        File.WriteAllText(manifest, """{"format": "disttrain-ckpt-v9", "step": 1}""");
        e = Assert.Throws<CheckpointException>(() => CheckpointManifest.Read(dir.Path));
        Assert.Equal($"{manifest}: format version 'disttrain-ckpt-v9' is not supported; this build reads disttrain-ckpt-v1; use the DistTrain version that wrote it", e.Message);

        File.WriteAllText(manifest, """{"format": "disttrain-ckpt-v1", "step": 1}""");   // required tokens, world_size missing
        e = Assert.Throws<CheckpointException>(() => CheckpointManifest.Read(dir.Path));
        Assert.StartsWith($"{manifest}: malformed manifest", e.Message);
    }

    [Fact]
    public void CommitRenamesAndLatestMovesLast()
    {
        using var dir = new TempDir();
        Assert.Null(CheckpointDirectory.ResolveLatest(dir.Path));
        string temp = CheckpointDirectory.BeginTemp(dir.Path, 7);
        Assert.Matches(@"^\.tmp-step-00000007-[0-9a-f]{32}$", Path.GetFileName(temp));
        Assert.Equal([temp], CheckpointDirectory.Partial(dir.Path));
        Assert.Empty(CheckpointDirectory.Complete(dir.Path));
        Assert.Throws<ArgumentException>(() => CheckpointDirectory.PointLatest(dir.Path, Path.GetFileName(temp)));

        string first = Save(dir.Path, 10);
        Assert.Equal("step-00000010\n", File.ReadAllText(dir.File("latest")));
        Assert.Equal(first, CheckpointDirectory.ResolveLatest(dir.Path));
        Assert.False(File.Exists(dir.File("latest.tmp")));

        // A save that crashed after commit but before latest moved: latest still names the old one.
        string second = Save(dir.Path, 20, pointLatest: false);
        Assert.Equal(first, CheckpointDirectory.ResolveLatest(dir.Path));
        Assert.Equal([first, second], CheckpointDirectory.Complete(dir.Path));
        Assert.Equal([temp], CheckpointDirectory.Partial(dir.Path));

        var e = Assert.Throws<CheckpointException>(() => CheckpointDirectory.Commit(CheckpointDirectory.BeginTemp(dir.Path, 20), second));
        Assert.Contains("already exists", e.Message);
    }

    [Fact]
    public void FoldersCanBeFsyncedButFilesAreNotMistakenForFolders()
    {
        if (OperatingSystem.IsWindows()) return;
        using var dir = new TempDir();
        File.WriteAllText(dir.File("f"), "x");
        Assert.True(CheckpointDirectory.FsyncDirectory(dir.Path));     // O_DIRECTORY has the right value for this platform
        Assert.False(CheckpointDirectory.FsyncDirectory(dir.File("f")));
    }

    [Fact]
    public void AFolderWithoutManifestIsNotComplete()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("step-00000003"));
        Assert.Empty(CheckpointDirectory.Complete(dir.Path));
        Assert.Throws<CheckpointException>(() => CheckpointDirectory.PointLatest(dir.Path, "step-00000003"));

        Save(dir.Path, 2);
        File.WriteAllText(dir.File("latest"), "step-00000003\n");    // hand-edited to an unfinished folder
        var e = Assert.Throws<CheckpointException>(() => CheckpointDirectory.ResolveLatest(dir.Path));
        Assert.Contains("the newest finished checkpoint is " + dir.File("step-00000002"), e.Message);
    }

    [Fact]
    public void KeepLastDeletesOldAndPartialButNeverLatest()
    {
        using var dir = new TempDir();
        string one = Save(dir.Path, 1);
        foreach (int step in new[] { 2, 3, 100000000 }) Save(dir.Path, step, pointLatest: false);   // steps sort numerically past 8 digits
        var owner = new SaveOwner("job", "run");
        CheckpointDirectory.TempFor(dir.Path, 4, owner);
        Assert.Single(CheckpointDirectory.Partial(dir.Path));

        CheckpointDirectory.KeepLast(dir.Path, 2, owner);
        Assert.Equal([one, dir.File("step-00000003"), dir.File("step-100000000")], CheckpointDirectory.Complete(dir.Path));
        Assert.Empty(CheckpointDirectory.Partial(dir.Path));
        Assert.Equal(one, CheckpointDirectory.ResolveLatest(dir.Path));

        CheckpointDirectory.PointLatest(dir.Path, "step-100000000");
        CheckpointDirectory.KeepLast(dir.Path, 1, owner);
        Assert.Equal([dir.File("step-100000000")], CheckpointDirectory.Complete(dir.Path));
    }
}
