using System.Diagnostics;

namespace DistTrain.Data;

/// <summary>`disttrain bench-data`: how fast <see cref="TokenWindowReader"/> delivers windows to a consumer that does nothing.</summary>
public static class ReaderBenchmark
{
    /// <summary>
    /// Reads windows (looping over the files) until at least maxTokens tokens, SeqLen+1 per window, have been
    /// delivered. Seconds include opening the files and the first row group.
    /// </summary>
    public static (long tokens, double seconds) Run(IReadOnlyList<string> files, int seqLen, int eot, int vocab, long maxTokens)
    {
        var clock = Stopwatch.StartNew();
        using var reader = new TokenWindowReader(new WindowReaderOptions(files, seqLen, eot, vocab));
        var window = new long[seqLen + 1];
        long tokens = 0;
        while (tokens < maxTokens && reader.TryNext(window)) tokens += window.Length;
        return (tokens, clock.Elapsed.TotalSeconds);
    }
}
