using DistTrain.Model.Kernels;
using TorchSharp;
using TorchSharp.Utils;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DistTrain.Model.Layers;

/// <summary>RMSNorm computed in fp32 whatever the compute dtype, then scaled (official RMSNorm).</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>, IUsesKernels
{
    readonly double _eps;
    public Parameter weight;

    public RmsNorm(long dim, double eps) : base(nameof(RmsNorm))
    {
        _eps = eps;
        weight = nn.Parameter(ones(dim));
        RegisterComponents();
    }

    public IKernels Kernels { get; set; } = ReferenceKernels.Instance;

    public override Tensor forward(Tensor x) => Kernels.RmsNorm(x, weight, _eps);

    /// <summary>The residual add before this norm, fused with it where the kernels can: (a + b, forward(a + b)).</summary>
    public (Tensor Sum, Tensor Normed) AddForward(Tensor a, Tensor b) => Kernels.AddRmsNorm(a, b, weight, _eps);

    /// <summary>norms[i].forward(xs[i]) for each i (tensors of one shape) as one kernel op (<see cref="IKernels.RmsNorms"/>: one launch each way when fused).</summary>
    public static Tensor[] Forward(IReadOnlyList<RmsNorm> norms, IReadOnlyList<Tensor> xs) =>
        norms[0].Kernels.RmsNorms(xs, norms.Select(m => (Tensor)m.weight).ToArray(), norms[0]._eps);

    /// <summary>A block output whose add is still pending: (its sum, forward(sum)), the add fused into the norm.</summary>
    public (Tensor Sum, Tensor Normed) Forward(Residual x) => x.B is null ? (x.A, forward(x.A)) : AddForward(x.A, x.B);

    /// <summary>x · rsqrt(mean(x²) + eps) in fp32, cast back to x's dtype (also RMSnormNoscale): the reference implementation (<see cref="ReferenceKernels"/>).</summary>
    public static Tensor Normalize(Tensor x, double eps)
    {
        using var scope = NewDisposeScope();
        var xf = Precision.Upcast(x);
        var normed = xf * rsqrt(xf.mul(xf).mean([-1], keepdim: true).Plus(eps));
        return normed.to(x.dtype).MoveToOuterDisposeScope();
    }
}
