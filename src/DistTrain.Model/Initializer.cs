using static TorchSharp.torch;

namespace DistTrain.Model;

/// <summary>
/// Initial weights, by parameter name. Linear and embedding weights N(0, 0.02), residual output
/// projections (attention.wo, feed_forward.w2) scaled by 1/sqrt(2L); norms one. MUDD follows the
/// official JAX trainer: dynamic_dense w1 N(0, 1/dim) (fan-in), w2 zero, dense_bs one-hot on the
/// newest layer, so a fresh MUDDFormer starts as a plain residual network.
/// </summary>
static class Initializer
{
    const double Std = 0.02;

    public static void Apply(nn.Module model, ModelConfig config)
    {
        using var noGrad = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            if (name.StartsWith("dynamic_dense.") && name.EndsWith(".w1.weight"))
                nn.init.normal_(p, 0, 1 / Math.Sqrt(config.Dim));
            else if (name.StartsWith("dynamic_dense."))
                nn.init.zeros_(p);
            else if (name.StartsWith("dense_bs."))
            {
                p.zero_();
                using var last = p[.., -1];
                last.fill_(Scalars.One);
            }
            else if (name.StartsWith("dwa."))
                continue;                                          // one-hot from its constructor
            else if (name.EndsWith("norm.weight") || name.Contains("norms.") || name.EndsWith("_norm.weight"))
                nn.init.ones_(p);
            else if (name.EndsWith("attention.wo.weight") || name.EndsWith("feed_forward.w2.weight"))
                nn.init.normal_(p, 0, Std / Math.Sqrt(2 * config.NLayer));
            else
                nn.init.normal_(p, 0, Std);
        }
    }
}
