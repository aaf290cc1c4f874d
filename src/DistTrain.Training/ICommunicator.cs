using static TorchSharp.torch;

namespace DistTrain.Training;

/// <summary>
/// The seam through which data parallelism enters the trainer. World size 1 is the same
/// trainer with <see cref="LocalCommunicator"/>; NCCL and the CPU ring implement it for N.
/// </summary>
public interface ICommunicator : IDisposable
{
    int Rank { get; }
    int WorldSize { get; }
    /// <summary>In place: every rank ends with the mean over ranks of <paramref name="flat"/>.</summary>
    void AllReduceMean(Tensor flat);
    /// <summary>In place: every rank ends with rank <paramref name="root"/>'s <paramref name="flat"/>.</summary>
    void Broadcast(Tensor flat, int root);
}

/// <summary>One process: the reductions are identities.</summary>
public sealed class LocalCommunicator : ICommunicator
{
    public int Rank => 0;
    public int WorldSize => 1;
    public void AllReduceMean(Tensor flat) { }
    public void Broadcast(Tensor flat, int root) { }
    public void Dispose() { }
}
