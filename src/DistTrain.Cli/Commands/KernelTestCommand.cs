using System.CommandLine;
using DistTrain.Training.Diagnostics;

namespace DistTrain.Cli.Commands;

/// <summary>disttrain kernel-test --device N: every fused kernel against the reference on one GPU (make test-gpu); exit 1 on any failure.</summary>
static class KernelTestCommand
{
    public static Command Create()
    {
        var device = new Option<int>("--device") { Description = "CUDA device index", DefaultValueFactory = _ => 0 };
        var config = new Option<string>("--config") { Description = "config whose model section (with 3 layers) the whole-model check builds", DefaultValueFactory = _ => KernelSelfTest.DefaultModelConfig };
        var command = new Command("kernel-test", "check the fused CUDA kernels (forward and backward) against the reference ops on one GPU") { device, config };
        command.SetAction(parse =>
        {
            var checks = KernelSelfTest.Run(parse.GetValue(device), Console.WriteLine, parse.GetValue(config)!);
            int failed = checks.Count(c => !c.Pass);
            Console.WriteLine(failed == 0 ? $"kernel-test: all {checks.Count} checks passed" : $"kernel-test: {failed} of {checks.Count} checks FAILED");
            return failed == 0 ? 0 : 1;
        });
        return command;
    }
}
