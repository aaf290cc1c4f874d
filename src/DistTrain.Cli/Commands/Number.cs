using System.Globalization;

namespace DistTrain.Cli.Commands;

/// <summary>Numbers given as option text: one line naming the option when they do not parse or are out of range.</summary>
static class Number
{
    public static int Int(string text, string option, int min) =>
        int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v >= min ? v
            : throw new ArgumentException($"{option} {text}: give a whole number of at least {min}");

    public static long Long(string text, string option, long min) =>
        long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v >= min ? v
            : throw new ArgumentException($"{option} {text}: give a whole number of at least {min}");

    public static double Double(string text, string option, double min) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && double.IsFinite(v) && v >= min ? v
            : throw new ArgumentException($"{option} {text}: give a number of at least {min.ToString(CultureInfo.InvariantCulture)}");
}
