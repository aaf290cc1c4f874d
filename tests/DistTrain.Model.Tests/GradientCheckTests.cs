using DistTrain.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Model.Tests;

/// <summary>Backward agrees with central finite differences of the loss (fp64, a tiny model of each architecture).</summary>
public class GradientCheckTests
{
    [Theory]
    [InlineData(Architecture.MUDDFormer)]
    [InlineData(Architecture.DenseFormer)]
    [InlineData(Architecture.TransformerPP)]
    public void GradientsMatchFiniteDifferences(Architecture arch)
    {
        var config = TinyModels.Config(arch, layers: 2) with { Dim = 16, NHead = 2, IntermediateSize = 256, VocabSize = 24 };
        using var model = TinyModels.Build(config, seed: 5, dtype: ScalarType.Float64);
        var tokens = TinyModels.Tokens(config, 2, 6);
        var targets = TinyModels.Tokens(config, 2, 6, seed: 12);
        double Loss() => nn.functional.cross_entropy(model.forward(tokens).view(-1, config.VocabSize), targets.view(-1)).item<double>();

        var loss = nn.functional.cross_entropy(model.forward(tokens).view(-1, config.VocabSize), targets.view(-1));
        loss.backward();

        var generator = new Random(1);
        int checkedCount = 0;
        foreach (var (name, p) in model.named_parameters())
        {
            var grad = p.grad!.view(-1);
            var flat = p.detach().view(-1);
            for (int k = 0; k < 2; k++)
            {
                long i = generator.NextInt64(flat.shape[0]);
                double original = flat[i].item<double>();
                const double h = 1e-6;
                using (no_grad()) flat[i] = original + h;
                double up = Loss();
                using (no_grad()) flat[i] = original - h;
                double down = Loss();
                using (no_grad()) flat[i] = original;
                double numeric = (up - down) / (2 * h);
                double analytic = grad[i].item<double>();
                double tolerance = 1e-6 + 1e-4 * Math.Abs(numeric);
                Assert.True(Math.Abs(numeric - analytic) < tolerance, $"{name}[{i}]: backward {analytic:E6}, finite differences {numeric:E6}");
                checkedCount++;
            }
        }
        Assert.True(checkedCount > 20);
    }
}
