using DistTrain.Training;
using ScottPlot;
using SkiaSharp;

namespace DistTrain.Cli.Plots;

/// <summary>One PNG: a panel per metric stacked top to bottom, x = step, one coloured line per run, the runs named in a legend.</summary>
static class MetricsPlot
{
    const int Width = 1200, PanelHeight = 360, LeftAxisWidth = 90;

    public static void SavePng(IReadOnlyList<(string Name, IReadOnlyList<StepReport> Reports)> runs, IReadOnlyList<PlotMetric> metrics, string path)
    {
        // Skia's Linux build without fontconfig reads /usr/share/fonts and ScottPlot bundles no font:
        // with none there, every label and the legend come out blank without an error
        if (SKFontManager.Default.FontFamilies.All(string.IsNullOrEmpty))   // none: one nameless family
            throw new FileNotFoundException("disttrain plot: no font in /usr/share/fonts, so the plot's labels and legend would be blank; install one (Debian/Ubuntu: apt-get install fonts-dejavu-core) and run again");
        var palette = new ScottPlot.Palettes.Category10();
        var figure = new Multiplot();
        figure.AddPlots(metrics.Count);   // the total: adds or removes panels to reach it
        bool validation = false;
        // every panel spans all logged steps, so that a step lines up down the figure
        var steps = runs.SelectMany(run => run.Reports).Select(r => (double)r.Step).ToList();
        double margin = Math.Max(1, (steps.Max() - steps.Min()) * 0.02);
        for (int p = 0; p < metrics.Count; p++)
        {
            var (plot, metric) = (figure.GetPlot(p), metrics[p]);
            for (int r = 0; r < runs.Count; r++)
            {
                Line(plot, runs[r].Reports, metric.Value, palette.GetColor(r), LinePattern.Solid);
                if (metric.Validation is { } v)
                    validation |= Line(plot, runs[r].Reports, v, palette.GetColor(r), LinePattern.Dashed);
            }
            plot.Font.Set("DejaVu Sans");   // where installed (see the Makefile); otherwise Skia's default font
            plot.XLabel("step");
            plot.YLabel(metric.Label);
            plot.Axes.Left.Label.FontSize = plot.Axes.Bottom.Label.FontSize = 16;
            plot.Axes.Left.MinimumSize = LeftAxisWidth;
            plot.Axes.AutoScale();
            plot.Axes.SetLimitsX(steps.Min() - margin, steps.Max() + margin);
        }
        // the same legend beside every panel: equal widths keep the panels' step axes aligned
        var legend = runs.Select((run, r) => Item(run.Name, palette.GetColor(r), LinePattern.Solid)).ToList();
        if (validation) legend.Add(Item("validation (dashed)", Colors.Gray, LinePattern.Dashed));
        foreach (var plot in figure.GetPlots())
        {
            plot.Legend.ManualItems.AddRange(legend);
            plot.ShowLegend(Edge.Right);
        }
        figure.SavePng(path, Width, PanelHeight * metrics.Count);
    }

    /// <returns>whether the series had a point to draw</returns>
    static bool Line(Plot plot, IReadOnlyList<StepReport> reports, Func<StepReport, double?> value, Color color, LinePattern pattern)
    {
        var points = reports.Where(r => value(r) is not null).Select(r => (Step: (double)r.Step, Value: value(r)!.Value)).ToList();
        if (points.Count == 0) return false;
        var line = plot.Add.Scatter(points.Select(p => p.Step).ToArray(), points.Select(p => p.Value).ToArray(), color);
        line.LinePattern = pattern;
        line.LineWidth = 2;
        // sparse series (validation every eval_interval, short runs) get markers so that single points show
        line.MarkerSize = points.Count <= 30 ? 5 : 0;
        return true;
    }

    static LegendItem Item(string label, Color color, LinePattern pattern) =>
        new() { LabelText = label, LineColor = color, LineWidth = 2, LinePattern = pattern, LabelFontSize = 14 };
}
