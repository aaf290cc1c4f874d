using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training.Optim;

/// <summary>
/// Every parameter of a model as a view into one flat buffer, every gradient as a view into
/// another, so the optimizer step and the gradient all-reduce are a few large operations.
/// Weight-decayed parameters (matrices) come first, so decay applies to one prefix slice.
/// With bf16 compute the model's buffers are bf16 and an fp32 master copy holds the truth.
/// </summary>
public sealed class FlatParameters : IDisposable
{
    const long Align = 64;   // elements; keeps each view 128-byte aligned in bf16

    public Tensor Params { get; }      // compute dtype; the model's parameters are views of it
    public Tensor Grads { get; }       // compute dtype; each parameter's .grad is a view of it
    public Tensor Master { get; }      // fp32; == Params when computing in fp32 (or fp64 for checks)
    public long DecayCount { get; }    // elements [0, DecayCount) get weight decay
    public long Count { get; }
    public IReadOnlyList<(string Name, long Offset, long[] Shape)> Layout { get; }

    /// <summary>
    /// Takes a freshly built model (fp32, on the CPU), keeps its weights at full precision in the
    /// master, converts the model to <paramref name="computeDtype"/> on <paramref name="device"/> and
    /// points every parameter and gradient into the flat buffers.
    /// </summary>
    public FlatParameters(nn.Module model, ScalarType computeDtype, Device device)
    {
        var named = model.named_parameters().ToList();
        var ordered = named.Where(p => Decays(p.name, p.parameter)).Concat(named.Where(p => !Decays(p.name, p.parameter))).ToList();
        var layout = new List<(string, long, long[])>();
        long offset = 0, decay = 0;
        foreach (var (name, p) in ordered)
        {
            layout.Add((name, offset, p.shape));
            offset += (p.numel() + Align - 1) / Align * Align;
            if (Decays(name, p)) decay = offset;
        }
        Count = offset;
        DecayCount = decay;
        Layout = layout;

        var masterDtype = computeDtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        Master = zeros(Count, masterDtype, device);
        // the views in both loops are temporaries handed to libtorch: a scope keeps each reachable until libtorch has read it (see CheckpointSaver.Begin)
        using (no_grad())
        using (NewDisposeScope())
            foreach (var (name, off, shape) in layout)
                Master.narrow(0, off, shape.Aggregate(1L, (a, b) => a * b)).copy_(ordered.First(p => p.name == name).parameter.view(-1));

        model.to(computeDtype).to(device);   // replaces the parameter tensors; they are re-pointed below
        Params = computeDtype == masterDtype ? Master : Master.to(computeDtype);
        Grads = zeros(Count, computeDtype, device);
        var converted = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using (no_grad())
        using (NewDisposeScope())
        {
            foreach (var (name, off, shape) in layout)
            {
                var p = converted[name];
                long n = p.numel();
                p.set_(Params.narrow(0, off, n).view(shape));
                p.grad = Grads.narrow(0, off, n).view(shape);
            }
        }
    }

    /// <summary>Matrices (linear and embedding weights) decay; norms, dense_bs and DenseFormer weights do not.</summary>
    static bool Decays(string name, Tensor p) => p.dim() >= 2 && !name.StartsWith("dense_bs.");

    /// <summary>Copies the fp32 master into the compute-dtype parameters (no-op when they are one buffer).</summary>
    public void PublishMaster()
    {
        if (!ReferenceEquals(Master, Params))
            using (no_grad()) Params.copy_(Master);
    }

    public void ZeroGrads()
    {
        using (no_grad()) Grads.zero_();
    }

    public void Dispose()
    {
        if (!ReferenceEquals(Master, Params)) Master.Dispose();
        Params.Dispose();
        Grads.Dispose();
    }
}
