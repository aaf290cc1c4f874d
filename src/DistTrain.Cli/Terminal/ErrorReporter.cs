using DistTrain.Checkpoint;
using DistTrain.Data;
using DistTrain.Distributed;
using DistTrain.Worker;
using DistTrain.Training;
using DistTrain.Training.Config;
using Spectre.Console;

namespace DistTrain.Cli.Terminal;

/// <summary>Turns the errors a user can fix into one clear line and exit code 2; anything else is a bug and keeps its stack.</summary>
static class ErrorReporter
{
    public static int Run(Func<int> body)
    {
        try { return body(); }
        catch (Exception e) when (Unwrap(e) is Grpc.Core.RpcException)
        {
            var r = (Grpc.Core.RpcException)Unwrap(e);
            AnsiConsole.MarkupLineInterpolated($"[red]error:[/] the coordinator answered {r.StatusCode}: {r.Status.Detail}");
            return 2;
        }
        catch (Exception e) when (Unwrap(e) is ConfigException or DataException or InvalidDataException or TrainingException or WorkerException or CommunicatorException or CheckpointException or FileNotFoundException or DirectoryNotFoundException or ArgumentException)
        {
            var inner = Unwrap(e);
            AnsiConsole.MarkupLineInterpolated($"[red]error:[/] {inner.Message}");
            return 2;
        }
    }

    static Exception Unwrap(Exception e) => e is AggregateException { InnerException: { } inner } ? Unwrap(inner) : e;
}
