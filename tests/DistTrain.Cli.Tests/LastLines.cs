namespace DistTrain.Cli.Tests;

/// <summary>What each process said last: a failure must be named there, where a person (or a scheduler's log tail) looks.</summary>
static class LastLines
{
    /// <summary>The last non-empty line of one process's output.</summary>
    public static string Of(string output) =>
        output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault() ?? "";

    /// <summary>The last line `launch` forwarded from one of its processes ("[rank 1] ...", "[coordinator] ..."), or wrote itself ("[launch] ...").</summary>
    public static string Of(string launchOutput, string process) =>
        launchOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault(l => l.StartsWith($"[{process}] ")) ?? "";
}
