using System.Buffers.Binary;

namespace DistTrain.Cli.Tests;

/// <summary>`disttrain plot` on synthetic run directories: the PNG it writes, and the one-line errors for bad input.</summary>
public class PlotTests
{
    static readonly TimeSpan Minutes = TimeSpan.FromMinutes(2);

    [Fact]
    public void TwoRunsBecomeOnePngWithAPanelPerMetric()
    {
        var dir = Directory.CreateTempSubdirectory("disttrain-plot-").FullName;
        try
        {
            var a = Run(dir, "baseline", steps: 40, loss0: 5.5);
            var b = Run(dir, "muddformer", steps: 30, loss0: 5.2);
            var png = Path.Combine(dir, "x.png");
            var (code, output) = Disttrain.Run(Minutes, "plot", a, b, "--output", png);
            Assert.True(code == 0, output);
            Assert.Contains($"wrote {png}", output);
            Assert.Equal((1200, 2 * 360), PngSize(png));   // default panels: loss and tokens/s
            Assert.InRange(new FileInfo(png).Length, 20_000, 2_000_000);

            var (again, second) = Disttrain.Run(Minutes, "plot", a, b, "--metrics", "loss, lr,grad_norm");
            Assert.True(again == 0, second);
            Assert.Equal((1200, 3 * 360), PngSize(Path.Combine(a, "plot.png")));   // the default: beside the first run's metrics
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void AFolderWithoutMetricsExitsWithCode2AndNamesTheFile()
    {
        var dir = Directory.CreateTempSubdirectory("disttrain-plot-").FullName;
        try
        {
            var empty = Directory.CreateDirectory(Path.Combine(dir, "not-a-run")).FullName;
            var (code, output) = Disttrain.Run(Minutes, "plot", Run(dir, "good", 10, 5), empty, "--output", Path.Combine(dir, "x.png"));
            Assert.Equal(2, code);
            Assert.Contains($"{Path.Combine(empty, "metrics.jsonl")}: not found; is {empty} a run directory?", output);
            Assert.DoesNotContain("   at ", output);
            Assert.False(File.Exists(Path.Combine(dir, "x.png")));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void AMalformedLineExitsWithCode2AndNamesTheFileAndLine()
    {
        var dir = Directory.CreateTempSubdirectory("disttrain-plot-").FullName;
        try
        {
            var run = Run(dir, "cut", 10, 5);
            var metrics = Path.Combine(run, "metrics.jsonl");
            File.AppendAllText(metrics, "{\"step\":11,\"loss\":4.1,\"lr\":0.001,\"tok");   // a line cut short
            var (code, output) = Disttrain.Run(Minutes, "plot", run);
            Assert.Equal(2, code);
            Assert.Contains($"{metrics}:11: not a step report", output);
            Assert.Contains("fix or delete that line", output);

            var (unknown, message) = Disttrain.Run(Minutes, "plot", run, "--metrics", "loss,perplexity");
            Assert.Equal(2, unknown);
            Assert.Contains("--metrics: 'perplexity' is not one of loss, val_loss, lr, tokens_per_s", message);
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>A run folder with a metrics.jsonl of <paramref name="steps"/> logged steps, validation every 10th.</summary>
    static string Run(string parent, string name, int steps, double loss0)
    {
        var run = Directory.CreateDirectory(Path.Combine(parent, name)).FullName;
        var lines = Enumerable.Range(1, steps).Select(s =>
            FormattableString.Invariant($"{{\"step\":{s},\"loss\":{loss0 * Math.Exp(-s / 20.0) + 2},\"lr\":{1e-3 * Math.Min(1, s / 5.0)},\"tokens\":{s * 4096},") +
            FormattableString.Invariant($"\"tokens_per_s\":{12000 + 500 * Math.Sin(s)},\"grad_norm\":{1.0 / s},\"data_wait_s\":0.01,\"step_s\":0.3") +
            (s % 10 == 0 ? FormattableString.Invariant($",\"val_loss\":{loss0 * Math.Exp(-s / 20.0) + 2.1}}}") : "}"));
        File.WriteAllLines(Path.Combine(run, "metrics.jsonl"), lines);
        return run;
    }

    /// <summary>Width and height from a PNG's IHDR chunk, after checking the signature.</summary>
    static (int Width, int Height) PngSize(string path)
    {
        var bytes = File.ReadAllBytes(path);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }, bytes[..8]);
        Assert.Equal("IHDR", System.Text.Encoding.ASCII.GetString(bytes, 12, 4));
        return (BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(16)), BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(20)));
    }
}
