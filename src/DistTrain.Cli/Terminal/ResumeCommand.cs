namespace DistTrain.Cli.Terminal;

/// <summary>The command line this process was started with, its --resume replaced by a checkpoint: what a stopped run prints.</summary>
static class ResumeCommand
{
    public static string For(string checkpoint)
    {
        var args = Environment.GetCommandLineArgs();
        // `dotnet disttrain.dll ...` or the published `disttrain ...`: args[0] is the dll or the executable
        var self = Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? [p, Path.GetFullPath(args[0])] : new[] { Environment.ProcessPath ?? args[0] };
        var kept = new List<string>();
        for (int i = 1; i < args.Length; i++)
        {
            if (args[i] == "--resume") { i++; continue; }
            if (args[i].StartsWith("--resume=") || args[i] == "--resume-fallback") continue;
            kept.Add(args[i]);
        }
        return string.Join(' ', self.Concat(kept).Concat(["--resume", checkpoint]).Select(Quote));
    }

    /// <summary>POSIX shell quoting: plain words as they are, anything else in single quotes.</summary>
    static string Quote(string arg) =>
        arg.Length > 0 && arg.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:,@+%".Contains(c)) ? arg : "'" + arg.Replace("'", "'\\''") + "'";

    /// <summary>The line every stopped process prints last.</summary>
    public static string StoppedLine(int step, string? checkpoint, string? resume = null) => checkpoint is null
        ? $"stopped at step {step}; checkpoint: none (checkpoint.interval=0 saves nothing); resume with: nothing to resume from"
        : $"stopped at step {step}; checkpoint {checkpoint}; resume with: {resume ?? For(checkpoint)}";
}
