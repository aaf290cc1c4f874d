using DistTrain.Checkpoint;
using DistTrain.Data;
using DistTrain.Distributed;
using DistTrain.Protocol.V1;
using DistTrain.Training;
using DistTrain.Training.Config;
using Grpc.Core;

namespace DistTrain.Worker;

/// <summary>
/// What a failing rank tells the coordinator before it exits: its own error (a config error, an I/O error such
/// as a full disk, a data error, an exception in its training step), which is the job's cause; or a broken
/// collective or coordinator call, which most likely is another rank's failure reaching this one.
/// </summary>
static class FailureReport
{
    public static FinishRequest For(int rank, int step, Exception error, bool interrupted)
    {
        var e = Unwrap(error);
        bool collective = !interrupted && e is CommunicatorException or RpcException or OperationCanceledException;
        return new FinishRequest
        {
            Rank = rank, Step = step, Failed = true,
            Message = interrupted ? "the worker was interrupted (SIGINT or SIGTERM)" : Describe(e),
            Failure = collective ? FinishRequest.Types.Failure.Collective : !interrupted && ContextLost(e) ? FinishRequest.Types.Failure.Process : FinishRequest.Types.Failure.Own,
        };
    }

    /// <summary>A sticky CUDA error (<see cref="Cuda.CudaException.PoisonsProcess"/>): the process must end; a new one can go on.</summary>
    static bool ContextLost(Exception e) => Cuda.CudaException.PoisonsProcess(e);

    /// <summary>A user's error as its message says it; anything else (a bug) with its type, which the message alone rarely names.</summary>
    static string Describe(Exception e) => e is ConfigException or DataException or InvalidDataException or TrainingException or WorkerException
        or CheckpointException or CommunicatorException or FileNotFoundException or DirectoryNotFoundException or RpcException
        ? e.Message
        : $"{e.GetType().FullName}: {e.Message}";

    static Exception Unwrap(Exception e) => e is AggregateException { InnerException: { } inner } ? Unwrap(inner) : e;
}
