using DistTrain.Model.Kernels;
using TorchSharp;
using TorchSharp.Utils;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DistTrain.Model.Layers;

/// <summary>
/// DenseFormer's depth-weighted average after block i: x = Σ_j α_j · h_j over the inputs chosen
/// by dilation (h_0 the embedding, h_{i+1} the block output). α starts one-hot on the block
/// output, so a fresh DenseFormer equals a Transformer++.
/// </summary>
public sealed class DepthWeightedAverage : nn.Module, IUsesKernels
{
    readonly int[] _inputs;
    public Parameter weight;

    public DepthWeightedAverage(ModelConfig config, int layer) : base(nameof(DepthWeightedAverage))
    {
        _inputs = config.DwaInputs(layer);
        var init = zeros(_inputs.Length);
        using (var last = init[^1]) last.fill_(Scalars.One);
        weight = nn.Parameter(init);
        RegisterComponents();
    }

    public IKernels Kernels { get; set; } = ReferenceKernels.Instance;

    /// <summary>hiddens: the embedding and every block output so far -> Σ_j α_j · h_{inputs[j]} (B, T, D).</summary>
    public Tensor Forward(IReadOnlyList<Tensor> hiddens) => Kernels.DepthWeightedAverage([.. _inputs.Select(j => hiddens[j])], weight);
}

/// <summary>The averages of a DenseFormer keyed by block index (dwa.{i}); blocks the period skips have none.</summary>
public sealed class DepthWeightedAverages : nn.Module
{
    readonly Dictionary<int, DepthWeightedAverage> _byLayer = [];

    public DepthWeightedAverages(ModelConfig config) : base(nameof(DepthWeightedAverages))
    {
        for (int i = 0; i < config.NLayer; i++)
        {
            if (!config.HasDwa(i)) continue;
            _byLayer[i] = new DepthWeightedAverage(config, i);
            register_module(i.ToString(), _byLayer[i]);
        }
    }

    public bool TryGet(int layer, out DepthWeightedAverage dwa) => _byLayer.TryGetValue(layer, out dwa!);
}
