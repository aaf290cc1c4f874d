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

    public static Option<string?> Resume() => new("--resume")
    {
        Description = "resume from a checkpoint folder, or 'latest' in checkpoint.dir (same as --set checkpoint.resume=...)",
    };

    /// <summary>--set overrides plus --resume, in the order the config loader applies them.</summary>
    public static string[] Overrides(System.CommandLine.ParseResult parse, Option<string[]> set, Option<string?> resume) =>
        parse.GetValue(resume) is { Length: > 0 } r ? [.. parse.GetValue(set)!, $"checkpoint.resume={r}"] : parse.GetValue(set)!;

    public static Option<string[]> Set() => new("--set")
    {
        Description = "override a config key, for example --set train.steps=100 (repeatable)",
        AllowMultipleArgumentsPerToken = false,
        DefaultValueFactory = _ => [],
    };
}
