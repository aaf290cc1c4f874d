using System.Security.Cryptography;

namespace DistTrain.Checkpoint;

public static class Checksums
{
    /// <summary>SHA-256 of a file as lowercase hex, streamed in 1 MiB reads (shards are gigabytes).</summary>
    public static string Sha256File(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 20, FileOptions.SequentialScan);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }
}
