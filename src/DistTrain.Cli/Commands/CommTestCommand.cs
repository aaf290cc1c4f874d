using System.CommandLine;
using DistTrain.Distributed.Nccl;

namespace DistTrain.Cli.Commands;

/// <summary>disttrain comm-test nccl --device N: NCCL at world size 1 on one GPU (library found, all-reduce, broadcast, barrier, abort).</summary>
static class CommTestCommand
{
    public static Command Create()
    {
        var device = new Option<int>("--device") { Description = "CUDA device index", DefaultValueFactory = _ => 0 };
        var nccl = new Command("nccl", "check NCCL on one GPU: find libnccl, all-reduce, broadcast, barrier, abort") { device };
        nccl.SetAction(parse =>
        {
            Console.WriteLine(NcclSelfTest.Run(parse.GetValue(device)));
            return 0;
        });
        return new Command("comm-test", "check a communicator on this host") { nccl };
    }
}
