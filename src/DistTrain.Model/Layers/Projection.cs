using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DistTrain.Model.Layers;

/// <summary>
/// A bias-free linear layer, y = x Wᵀ (the model's wq/wk/wv/wqkv/wo, w1/w2/w3 and the dynamic-dense
/// MLPs), whose backward adds the weight's gradient into the weight's own .grad with one GEMM
/// (<see cref="ProjectionFunction"/>). Parameter name, shape and initial draw are nn.Linear's.
/// </summary>
public sealed class Projection : nn.Module<Tensor, Tensor>
{
    public Parameter weight;

    public Projection(long inFeatures, long outFeatures) : base(nameof(Projection))
    {
        // nn.Linear's own initialisation: the same random draws, so seeded models do not change
        weight = empty(outFeatures, inFeatures).AsParameter();
        nn.init.kaiming_uniform_(weight, a: Math.Sqrt(5));
        RegisterComponents();
    }

    /// <summary>x (..., in) -> (..., out) in x's dtype.</summary>
    public override Tensor forward(Tensor x) => ProjectionFunction.Apply(x, weight);
}
