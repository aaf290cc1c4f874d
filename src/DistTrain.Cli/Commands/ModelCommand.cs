using System.CommandLine;
using DistTrain.Model;
using DistTrain.Training.Config;
using Spectre.Console;
using static TorchSharp.torch;

namespace DistTrain.Cli.Commands;

/// <summary>disttrain model info --config C: parameter counts and the dense-connection overhead.</summary>
static class ModelCommand
{
    public static Command Create()
    {
        var config = CommonOptions.Config();
        var set = CommonOptions.Set();
        var info = new Command("info", "print parameter counts, per-layer widths and the dense-connection overhead") { config, set };
        info.SetAction(parse =>
        {
            var m = TrainConfigLoader.LoadModel(parse.GetValue(config)!, parse.GetValue(set));
            ModelInfo counts;
            // built on the meta device: shapes without memory, so the 1.4B size costs nothing
            using (var model = WithDefaultDevice(device("meta"), () => new LanguageModel(m)))
                counts = ModelInfo.Of(model);
            Print(m, counts);
            return 0;
        });
        return new Command("model", "inspect model configs") { info };
    }

    internal static T WithDefaultDevice<T>(Device d, Func<T> build)
    {
        var previous = get_default_device();
        set_default_device(d);
        try { return build(); }
        finally { set_default_device(previous); }
    }

    static void Print(ModelConfig m, ModelInfo c)
    {
        AnsiConsole.MarkupLineInterpolated($"[bold]{m.Arch}[/]: dim {m.Dim}, {m.NLayer} layers, {m.NHead} heads of {m.HeadDim}, vocab {m.VocabSize}, block {m.BlockSize}");
        var table = new Table().AddColumns("group", "parameters", "share");
        void Row(string name, long n) => table.AddRow(name, n.ToString("N0"), $"{100.0 * n / c.Total:F2}%");
        Row("tok_embeddings", c.Embedding);
        Row("layers", c.Layers);
        Row("dense connections", c.DenseConnections);
        Row("final norm", c.Norms);
        Row("output", c.Output);
        table.AddRow("[bold]total[/]", $"[bold]{c.Total:N0}[/]", "100%");
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLineInterpolated($"non-embedding parameters: {c.Total - c.Embedding:N0}");
        AnsiConsole.MarkupLineInterpolated($"dense-connection overhead: {c.DenseConnections:N0} parameters = {100 * c.DenseOverhead:F3}% of the rest");
        AnsiConsole.MarkupLineInterpolated($"FFN widths: {string.Join(" ", Enumerable.Range(0, m.NLayer).Select(m.FfnWidth))}");
        if (m.Arch == Architecture.MUDDFormer)
            AnsiConsole.MarkupLineInterpolated($"dynamic-dense hidden widths: {string.Join(" ", Enumerable.Range(0, m.NLayer).Select(m.DynamicDenseHidden))}");
    }
}
