using System.CommandLine;
using DistTrain.Cli.Commands;
using DistTrain.Cli.Terminal;

var root = new RootCommand("DistTrain: data-parallel training of Transformer++, DenseFormer and MUDDFormer language models on TorchSharp")
{
    TrainCommand.Create(),
    PrepareCommand.Create(),
    ModelCommand.Create(),
    BenchCommand.Create(),
};
return ErrorReporter.Run(() => root.Parse(args).Invoke());
