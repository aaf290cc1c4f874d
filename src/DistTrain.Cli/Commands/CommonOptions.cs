using System.CommandLine;

namespace DistTrain.Cli.Commands;

/// <summary>--config and --set, shared by every command that reads a training config.</summary>
static class CommonOptions
{
    public static Option<string> Config() => new("--config", "-c")
    {
        Description = "training config (YAML), for example configs/tiny-muddformer.yaml",
        Required = true,
    };

    public static ResumeOptions Resume() => new();

    /// <summary>--set overrides plus --resume / --resume-fallback, in the order the config loader applies them.</summary>
    public static string[] Overrides(ParseResult parse, Option<string[]> set, ResumeOptions resume)
    {
        var overrides = parse.GetValue(set)!.ToList();
        if (parse.GetValue(resume.Path) is { Length: > 0 } r) overrides.Add($"checkpoint.resume={r}");
        if (parse.GetValue(resume.Fallback)) overrides.Add("checkpoint.fallback=true");
        if (parse.GetValue(resume.InitFrom) is { Length: > 0 } i) overrides.Add($"checkpoint.init_from={i}");
        return [.. overrides];
    }

    public static Option<string[]> Set() => new("--set")
    {
        Description = "override a config key, for example --set train.steps=100 (repeatable)",
        AllowMultipleArgumentsPerToken = false,
        DefaultValueFactory = _ => [],
    };
}

/// <summary>--resume PATH|latest, --resume-fallback and --init-from PATH.</summary>
sealed class ResumeOptions
{
    public Option<string?> Path { get; } = new("--resume")
    {
        Description = "resume from a checkpoint folder, or 'latest' in checkpoint.dir (same as --set checkpoint.resume=...)",
    };

    public Option<bool> Fallback { get; } = new("--resume-fallback")
    {
        Description = "with --resume latest: if latest fails verification (checksum, missing file), resume from the newest good checkpoint and report the ones passed over (checkpoint.fallback=true)",
    };

    public Option<string?> InitFrom { get; } = new("--init-from")
    {
        Description = "start from a checkpoint's weights (for example one `disttrain import` wrote) with a fresh optimizer, at step 0 (same as --set checkpoint.init_from=...)",
    };

    public void AddTo(Command command)
    {
        command.Options.Add(Path);
        command.Options.Add(Fallback);
        command.Options.Add(InitFrom);
    }
}
