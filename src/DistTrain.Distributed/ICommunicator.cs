using static TorchSharp.torch;

namespace DistTrain.Distributed;

/// <summary>
/// The seam through which data parallelism enters the trainer. World size 1 is the same
/// trainer with <see cref="LocalCommunicator"/>; NCCL and the CPU ring implement it for N.
/// Every rank calls the same collectives in the same order, with tensors of the same size and dtype.
/// </summary>
public interface ICommunicator : IDisposable
{
    int Rank { get; }
    int WorldSize { get; }
    /// <summary>In place: every rank ends with the mean over ranks of <paramref name="flat"/>.</summary>
    void AllReduceMean(Tensor flat);
    /// <summary>In place: every rank ends with rank <paramref name="root"/>'s <paramref name="flat"/>.</summary>
    void Broadcast(Tensor flat, int root);
    /// <summary>
    /// Rank r sends <paramref name="send"/> to rank (r+1)%W and receives rank (r-1+W)%W's into <paramref name="receive"/>
    /// (that rank's send: its size and dtype): the neighbour's copy of an in-memory snapshot. One rank: receive = send.
    /// </summary>
    void Shift(Tensor send, Tensor receive);
    /// <summary>Returns once every rank has entered the barrier.</summary>
    void Barrier();
    /// <summary>
    /// Tears the communicator down now, from any thread: a collective blocked here or on another rank
    /// throws <see cref="CommunicatorException"/> within a second or two, and later calls throw too.
    /// </summary>
    void Abort();
}

/// <summary>One process: the reductions are identities.</summary>
public sealed class LocalCommunicator : ICommunicator
{
    public int Rank => 0;
    public int WorldSize => 1;
    public void AllReduceMean(Tensor flat) { }
    public void Broadcast(Tensor flat, int root) { }
    public void Shift(Tensor send, Tensor receive) => receive.copy_(send);
    public void Barrier() { }
    public void Abort() { }
    public void Dispose() { }
}
