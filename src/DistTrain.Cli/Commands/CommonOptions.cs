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

    public static Option<string[]> Set() => new("--set")
    {
        Description = "override a config key, for example --set train.steps=100 (repeatable)",
        AllowMultipleArgumentsPerToken = false,
        DefaultValueFactory = _ => [],
    };
}
