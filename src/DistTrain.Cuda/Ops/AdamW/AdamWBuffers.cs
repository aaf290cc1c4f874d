using static TorchSharp.torch;

namespace DistTrain.Cuda.Ops.AdamW;

/// <summary>
/// The flat buffers one AdamW step reads and writes (FlatAdamW's): fp32 master, gradients in the
/// compute dtype (bf16 or fp32), fp32 moments, the bf16 parameters (null when they are the master),
/// the decayed prefix [0, DecayCount), and two 0-dim device scalars: the count of finite steps
/// (fp64) and the first non-finite step (int64, -1: none).
/// </summary>
public sealed record AdamWBuffers(Tensor Master, Tensor Grads, Tensor ExpAvg, Tensor ExpAvgSq, Tensor? Params, long DecayCount,
    Tensor Steps, Tensor FirstNonFinite);

/// <summary>The step's hyper-parameters (optim.*); GradClip 0: no clipping.</summary>
public sealed record AdamWSettings(double Beta1, double Beta2, double Eps, double WeightDecay, double GradClip);
