using System.CommandLine;
using DistTrain.Cli.Commands;
using DistTrain.Cli.Terminal;

// piped output (CI, launch's forwarding) gets long lines instead of Spectre's 80-column wrap
if (Console.IsOutputRedirected) Spectre.Console.AnsiConsole.Profile.Width = 200;

var root = new RootCommand("DistTrain: data-parallel training of Transformer++, DenseFormer and MUDDFormer language models on TorchSharp")
{
    TrainCommand.Create(),
    PrepareCommand.Create(),
    ModelCommand.Create(),
    BenchCommand.Create(),
    ClusterCommands.Launch(),
    ClusterCommands.Coordinator(),
    ClusterCommands.Worker(),
    ClusterCommands.Status(),
    CommTestCommand.Create(),
    KernelTestCommand.Create(),
    CheckpointCommands.Inspect(),
    CheckpointCommands.Export(),
    CheckpointCommands.Import(),
    CheckpointCommands.Score(),
    CheckpointCommands.Eval(),
    GenerateCommand.Create(),
    PlotCommand.Create(),
};
// signals are the commands' own (StopSignals: a graceful stop with a checkpoint), not a cancelled token;
// errors reach ErrorReporter: a user mistake is one line and exit code 2, not a stack trace
var parse = root.Parse(args);
if (parse.Errors.Count > 0 && !args.Any(a => a is "-h" or "--help" or "-?"))
{
    // an unknown option, a missing value, a value of the wrong type: one line each, exit 2 like every user mistake
    foreach (var error in parse.Errors) Console.Error.WriteLine($"error: {error.Message}");
    var path = new List<string>();
    for (var c = parse.CommandResult; c is not null; c = c.Parent as System.CommandLine.Parsing.CommandResult) path.Insert(0, c.Command.Name);
    path[0] = "disttrain";
    Console.Error.WriteLine($"see `{string.Join(' ', path)} --help` for the options");
    return 2;
}
return ErrorReporter.Run(() => parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null }));
