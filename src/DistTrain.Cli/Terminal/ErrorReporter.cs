using DistTrain.Checkpoint;
using DistTrain.Cuda;
using DistTrain.Data;
using DistTrain.Distributed;
using DistTrain.Worker;
using DistTrain.Training;
using DistTrain.Training.Config;

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
            Print($"the coordinator answered {r.StatusCode}: {r.Status.Detail}");
            return 2;
        }
        catch (Exception e) when (Unwrap(e) is ConfigException or DataException or InvalidDataException or TrainingException or WorkerException or CommunicatorException or CheckpointException or CudaUnavailableException or FileNotFoundException or DirectoryNotFoundException
            or (ArgumentException and not ArgumentOutOfRangeException and not ArgumentNullException))   // those two are our bugs: keep the stack
        {
            var inner = Unwrap(e);
            // an ArgumentException's message ends in " (Parameter 'name')": the C# parameter, not the user's option
            Print(inner is ArgumentException { ParamName: { } name } a ? a.Message.Replace($" (Parameter '{name}')", "") : inner.Message);
            return 2;
        }
    }

    /// <summary>One unwrapped line on stderr (paths in messages stay whole for grep and tests), red on a terminal.</summary>
    static void Print(string message) =>
        Console.Error.WriteLine(Console.IsErrorRedirected ? $"error: {message}" : $"\u001b[31merror:\u001b[0m {message}");

    static Exception Unwrap(Exception e) => e is AggregateException { InnerException: { } inner } ? Unwrap(inner) : e;
}
