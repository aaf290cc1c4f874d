using DistTrain.Model;
using DistTrain.Training.Config;
using DistTrain.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training.Tests;

public class FlatAdamWTests
{
    static readonly ModelConfig Tiny = new() { Arch = Architecture.MUDDFormer, VocabSize = 40, BlockSize = 16, Dim = 32, NLayer = 3, NHead = 4, IntermediateSize = 256, UseQkNorm = true };
    static readonly OptimOptions Options = new(Lr: 1e-2, MinLrRatio: 0.1, WarmupSteps: 0, WeightDecay: 0.1, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, GradClip: 0.5);

    [Fact]
    public void MatchesTorchAdamWWithClippingOnPerTensorParameters()   // in fp64, so only real differences show
    {
        manual_seed(3);
        var tokens = randint(Tiny.VocabSize, [4, 9], dtype: ScalarType.Int64);
        var (x, y) = (tokens[.., ..^1], tokens[.., 1..]);

        manual_seed(1);
        using var flatModel = new LanguageModel(Tiny);
        using var flat = new FlatParameters(flatModel, ScalarType.Float64, CPU);
        using var ours = new FlatAdamW(flat, Options);

        manual_seed(1);
        using var refModel = new LanguageModel(Tiny);
        refModel.to(ScalarType.Float64);
        var named = refModel.named_parameters().ToList();
        var decay = named.Where(p => p.parameter.dim() >= 2 && !p.name.StartsWith("dense_bs")).Select(p => p.parameter).ToList();
        var rest = named.Where(p => !(p.parameter.dim() >= 2 && !p.name.StartsWith("dense_bs"))).Select(p => p.parameter).ToList();
        var refDecay = optim.AdamW(decay, Options.Lr, Options.Beta1, Options.Beta2, Options.Eps, Options.WeightDecay);
        var refRest = optim.AdamW(rest, Options.Lr, Options.Beta1, Options.Beta2, Options.Eps, 0);

        var norms = new List<(double Ours, double Reference)>();
        for (int step = 0; step < 4; step++)
        {
            Trainer.Loss(flatModel.forward(x), y).backward();
            norms.Add((ours.Step(Options.Lr, step).item<double>(), 0));
            flat.ZeroGrads();

            refDecay.zero_grad(); refRest.zero_grad();
            Trainer.Loss(refModel.forward(x), y).backward();
            double refNorm = nn.utils.clip_grad_norm_(named.Select(p => p.parameter), Options.GradClip);
            norms[^1] = (norms[^1].Ours, refNorm);
            refDecay.step(); refRest.step();
        }

        foreach (var (o, r) in norms) Assert.Equal(r, o, 9);
        Assert.True(norms[0].Ours > Options.GradClip);   // clipping was active
        var reference = refModel.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in flatModel.named_parameters())
        {
            double diff = (p - reference[name]).abs().max().item<double>();
            Assert.True(diff < 1e-10, $"{name}: max |Δ| = {diff:E2}");
        }
    }

    [Fact]
    public void ParametersAndGradientsLiveInTheFlatBuffers()
    {
        manual_seed(1);
        using var model = new LanguageModel(Tiny);
        using var flat = new FlatParameters(model, ScalarType.BFloat16, CPU);
        Assert.Equal(ScalarType.Float32, flat.Master.dtype);
        Assert.Equal(ScalarType.BFloat16, flat.Params.dtype);
        var tokens = randint(Tiny.VocabSize, [2, 8], dtype: ScalarType.Int64);
        Trainer.Loss(model.forward(tokens[.., ..^1]), tokens[.., 1..]).backward();
        double fromViews = model.parameters().Sum(p => p.grad!.to(ScalarType.Float32).square().sum().item<float>());
        double fromFlat = flat.Grads.to(ScalarType.Float32).square().sum().item<float>();
        Assert.True(fromFlat > 0);
        Assert.Equal(fromViews, fromFlat, 3);
        using (no_grad()) flat.Params.fill_(0.5);
        Assert.All(model.parameters(), p => Assert.Equal(0.5f, p.to(ScalarType.Float32).mean().item<float>()));
    }
}
