namespace DistTrain.Checkpoint;

/// <summary>A checkpoint or safetensors file that cannot be used; the message names the file, the problem and what to do.</summary>
public sealed class CheckpointException : Exception
{
    public CheckpointException(string message) : base(message) { }

    public CheckpointException(string message, Exception inner) : base(message, inner) { }
}
