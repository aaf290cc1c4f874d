using DistTrain.Model.Kernels;
using DistTrain.Model.Layers;
using static TorchSharp.torch;

namespace DistTrain.Model.Tests;

public class KernelSeamTests
{
    /// <summary>Counts calls and runs the reference: what any IKernels set from outside sees.</summary>
    sealed class Counting : IKernels
    {
        public int Scaled, NoScale;
        public string Name => "counting";
        public Tensor RmsNorm(Tensor x, Tensor? weight, double eps)
        {
            if (weight is null) NoScale++; else Scaled++;
            return ReferenceKernels.Instance.RmsNorm(x, weight, eps);
        }
        public int Mixes;
        public Tensor[] Mix(IReadOnlyList<Tensor> hiddens, Tensor dw, HiddenGradients? gradients)
        {
            Mixes++;
            return ReferenceKernels.Instance.Mix(hiddens, dw, gradients);
        }
        public Tensor DepthWeightedAverage(IReadOnlyList<Tensor> hiddens, Tensor weights) => ReferenceKernels.Instance.DepthWeightedAverage(hiddens, weights);
    }

    [Fact]
    public void KernelsSetOnTheModelReachEveryNormAndGiveTheReferenceResult()
    {
        var config = TinyModels.Config(Architecture.MUDDFormer, layers: 3);
        using var model = TinyModels.Build(config);
        using var tokens = TinyModels.Tokens(config, 2, 8);
        using var before = model.forward(tokens);
        var counting = new Counting();
        model.Kernels = counting;
        using var after = model.forward(tokens);
        Assert.True(before.eq(after).all().item<bool>());
        // per layer: attention_norm(s) (3 with sepln after layer 0, else 1 called 3 times), q/k norms, ffn_norm; then the final norm
        Assert.True(counting.Scaled >= 3 * config.NLayer + 1, $"{counting.Scaled} scaled norms");
        Assert.Equal(config.NLayer, counting.NoScale);   // one dynamic-dense input per layer
        Assert.Equal(config.NLayer, counting.Mixes);     // one mix after each layer
        Assert.All(model.named_modules().Select(m => m.module).OfType<IUsesKernels>(), m => Assert.Same(counting, m.Kernels));
    }

    [Fact]
    public void TheReferenceIsTheModulesFormula()
    {
        using var norm = new RmsNorm(5, 1e-5);
        using var x = randn(3, 5);
        using var expected = RmsNorm.Normalize(x, 1e-5) * norm.weight;
        using var actual = norm.forward(x);
        Assert.True(expected.eq(actual).all().item<bool>());
        Assert.Same(ReferenceKernels.Instance, norm.Kernels);
    }
}
