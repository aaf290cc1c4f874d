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
return ErrorReporter.Run(() => root.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null }));
