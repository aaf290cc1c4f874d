using DistTrain.Model.Kernels;
using DistTrain.Model.Layers;
using static TorchSharp.torch;

namespace DistTrain.Model.Tests;

public class KernelSeamTests
{
    /// <summary>Counts calls and runs the reference: what any IKernels set from outside sees.</summary>
    sealed class Counting : IKernels
    {
        public int Scaled, NoScale, AddNorms, AddNoScale, SwiGlus, QkNormed, QkRotaryOnly;
        public string Name => "counting";
        public Tensor RmsNorm(Tensor x, Tensor? weight, double eps)
        {
            if (weight is null) NoScale++; else Scaled++;
            return ReferenceKernels.Instance.RmsNorm(x, weight, eps);
        }
        public int NormSets;
        public Tensor[] RmsNorms(IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> weights, double eps)
        {
            NormSets++;
            Scaled += xs.Count;
            return ReferenceKernels.Instance.RmsNorms(xs, weights, eps);
        }
        public (Tensor Sum, Tensor Normed) AddRmsNorm(Tensor a, Tensor b, Tensor? weight, double eps)
        {
            if (weight is null) AddNoScale++; else AddNorms++;
            return ReferenceKernels.Instance.AddRmsNorm(a, b, weight, eps);
        }
        public Tensor SwiGlu(Tensor a, Tensor b)
        {
            SwiGlus++;
            return ReferenceKernels.Instance.SwiGlu(a, b);
        }
        public Tensor QkNormRotary(Tensor x, Tensor? weight, double eps, Tensor cos, Tensor sin)
        {
            if (weight is null) QkRotaryOnly++; else QkNormed++;
            return ReferenceKernels.Instance.QkNormRotary(x, weight, eps, cos, sin);
        }
        public int QkPairs;
        public (Tensor Q, Tensor K) QkNormRotary(Tensor q, Tensor k, Tensor? qWeight, Tensor? kWeight, double eps, Tensor cos, Tensor sin)
        {
            QkPairs++;
            return (QkNormRotary(q, qWeight, eps, cos, sin), QkNormRotary(k, kWeight, eps, cos, sin));
        }
        public int Qkvs;
        public (Tensor Q, Tensor K, Tensor V) QkvRotary(IReadOnlyList<Tensor> xs, IReadOnlyList<Tensor> ws, int heads, Tensor? qWeight, Tensor? kWeight, double eps, Tensor cos, Tensor sin)
        {
            Qkvs++;
            return ReferenceKernels.QkvRotaryOf(this, xs, ws, heads, qWeight, kWeight, eps, cos, sin);
        }
        public int Mixes;
        public Tensor[] Mix(IReadOnlyList<Tensor> hiddens, Tensor dw, Tensor? bias, HiddenGradients? gradients)
        {
            Mixes++;
            return ReferenceKernels.Instance.Mix(hiddens, dw, bias, gradients);
        }
        public Tensor DepthWeightedAverage(IReadOnlyList<Tensor> hiddens, Tensor weights) => ReferenceKernels.Instance.DepthWeightedAverage(hiddens, weights);
        public int CrossEntropies;
        public void CrossEntropyRows(Tensor logits, Tensor targets, Tensor losses, long? meanOver)
        {
            CrossEntropies++;
            ReferenceKernels.Instance.CrossEntropyRows(logits, targets, losses, meanOver);
        }
        public int Scales;
        public void ScaleGradient(Tensor y, Tensor x, Tensor scale, bool accumulate)
        {
            Scales++;
            ReferenceKernels.Instance.ScaleGradient(y, x, scale, accumulate);
        }
    }

    /// <summary>A 3-layer tiny model's forward with the reference, then through a <see cref="Counting"/> set on it: the same output.</summary>
    static (ModelConfig Config, LanguageModel Model, Tensor Tokens, Counting Counting) CountedForward(Architecture arch)
    {
        var config = TinyModels.Config(arch, layers: 3);
        var model = TinyModels.Build(config);
        var tokens = TinyModels.Tokens(config, 2, 8);
        using var before = model.forward(tokens);
        var counting = new Counting();
        model.Kernels = counting;
        using var after = model.forward(tokens);
        Assert.True(before.eq(after).all().item<bool>());
        return (config, model, tokens, counting);
    }

    [Fact]
    public void KernelsSetOnTheModelReachEveryNormAndGiveTheReferenceResult()
    {
        var (config, model, tokens, counting) = CountedForward(Architecture.MUDDFormer);
        using var disposeModel = model;
        using var disposeTokens = tokens;
        // per layer: attention_norm(s) (3 with sepln after layer 0, else 1, called 1 or 3 times); then the final norm
        Assert.True(counting.Scaled >= config.NLayer + 1, $"{counting.Scaled} scaled norms");
        Assert.Equal(config.Sepln ? config.NLayer - 1 : 0, counting.NormSets);   // sepln's Q, K, V norms as one op, after layer 0
        Assert.Equal(config.NLayer, counting.AddNorms);  // per layer: h = r + attn with ffn_norm(h)
        Assert.Equal(config.NLayer, counting.AddNoScale);   // one dynamic-dense input per layer, normed with the layer's output add
        Assert.Equal(0, counting.NoScale);
        Assert.Equal(config.NLayer, counting.SwiGlus);
        // q and k per layer: QK-norm with rotary, or rotary alone
        Assert.Equal(2 * config.NLayer, config.UseQkNorm ? counting.QkNormed : counting.QkRotaryOnly);
        Assert.Equal(0, config.UseQkNorm ? counting.QkRotaryOnly : counting.QkNormed);
        Assert.Equal(config.NLayer, counting.QkPairs);   // q and k as one op per layer
        Assert.Equal(config.NLayer, counting.Qkvs);      // with their projections: the separate streams' Q, K, V
        Assert.Equal(config.NLayer, counting.Mixes);     // one mix after each layer
        Assert.All(model.named_modules().Select(m => m.module).OfType<IUsesKernels>(), m => Assert.Same(counting, m.Kernels));
        // the chunked loss runs each chunk's softmax through the same kernels: 2·8 rows in chunks of 5 -> 4 chunks
        using var loss = model.Loss(tokens, tokens, chunkRows: 5);
        Assert.Equal(4, counting.CrossEntropies);
        // and its backward scales the two saved gradients (the hiddens', the output weight's) by the loss's gradient
        loss.backward();
        Assert.Equal(2, counting.Scales);
    }

    [Fact]
    public void TransformerPlusPlusLeavesEachBlocksOutputAddToTheNextNorm()
    {
        var (config, model, tokens, counting) = CountedForward(Architecture.TransformerPP);
        using var disposeModel = model;
        using var disposeTokens = tokens;
        Assert.Equal(1, counting.Scaled);                    // only the first block's attention_norm reads a finished tensor (the embedding)
        Assert.Equal(2 * config.NLayer, counting.AddNorms);  // per block: ffn_norm(r + attn), and the next norm (or the final one) with out's add
        Assert.Equal(0, counting.NoScale + counting.AddNoScale);
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

    [Theory]
    [InlineData(true, true)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void TheAddNormReferenceIsThePlainAddThenTheNormInValuesAndGradients(bool scaled, bool sumUsed)
    {
        using var scope = NewDisposeScope();
        var (a, b, w) = (randn(2, 3, 8), randn(2, 3, 8), scaled ? randn(8) : null);
        var (gSum, gNormed) = (randn(2, 3, 8), randn(2, 3, 8));
        // the sum's gradient: from its own use (the block's final residual add) or none
        Tensor[] Run(Func<Tensor, Tensor, Tensor?, (Tensor Sum, Tensor Normed)> op)
        {
            var (ai, bi, wi) = (a.detach().requires_grad_(true), b.detach().requires_grad_(true), w?.detach().requires_grad_(true));
            var (sum, normed) = op(ai, bi, wi);
            var loss = normed.mul(gNormed).sum();
            if (sumUsed) loss = loss.Plus(sum.mul(gSum).sum());
            loss.backward();
            return [sum.detach(), normed.detach(), ai.grad!, bi.grad!, .. wi is null ? Array.Empty<Tensor>() : [wi.grad!]];
        }
        var separate = Run((x, y, g) =>
        {
            var sum = x.Plus(y);
            return (sum, ReferenceKernels.Instance.RmsNorm(sum, g, 1e-5));
        });
        var fusedOp = Run((x, y, g) => ReferenceKernels.Instance.AddRmsNorm(x, y, g, 1e-5));
        Assert.Equal(separate.Length, fusedOp.Length);
        for (int i = 0; i < separate.Length; i++)
            Assert.True(separate[i].eq(fusedOp[i]).all().item<bool>(), $"output {i} differs");
        Assert.True(fusedOp[2].eq(fusedOp[3]).all().item<bool>(), "a and b get the same gradient");
        // that gradient is dSum + the norm's gradient
        var xi = a.Plus(b).requires_grad_(true);
        ReferenceKernels.Instance.RmsNorm(xi, w, 1e-5).backward([gNormed]);
        var expected = sumUsed ? xi.grad!.Plus(gSum) : xi.grad!;
        Assert.True(fusedOp[2].allclose(expected, rtol: 1e-6, atol: 1e-6));
    }

    [Fact]
    public void TheAddNormReferenceKeepsTheDtypeAndRoundsTheSumOnce()
    {
        using var scope = NewDisposeScope();
        var (a, b, w) = (randn(4, 16).to(ScalarType.BFloat16), randn(4, 16).to(ScalarType.BFloat16), randn(16).to(ScalarType.BFloat16));
        var (sum, normed) = ReferenceKernels.Instance.AddRmsNorm(a, b, w, 1e-5);
        Assert.Equal(ScalarType.BFloat16, sum.dtype);
        Assert.Equal(ScalarType.BFloat16, normed.dtype);
        // fp32 math rounded once to bf16: what the fused kernel writes
        Assert.True(sum.eq(a.to(ScalarType.Float32).Plus(b.to(ScalarType.Float32)).to(ScalarType.BFloat16)).all().item<bool>());
        Assert.True(normed.eq(ReferenceKernels.Instance.RmsNorm(a.Plus(b), w, 1e-5)).all().item<bool>());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TheQkReferenceIsNormThenRotaryAsTheAttentionDidIt(bool normed)
    {
        using var scope = NewDisposeScope();
        var (cos, sin) = Rotary.Tables(16, 8, 10000, CPU);
        var x = randn(2, 16, 3, 8).to(ScalarType.BFloat16);
        var w = normed ? randn(8).to(ScalarType.BFloat16) : null;
        // x[:, :12] is a strided view, as q and k are views of the wqkv output
        var expected = Rotary.Apply(w is null ? x : RmsNorm.Normalize(x, 1e-6) * w, cos, sin);
        var actual = ReferenceKernels.Instance.QkNormRotary(x[.., ..12], w, 1e-6, cos[..12], sin[..12]);
        Assert.True(actual.eq(expected[.., ..12]).all().item<bool>());
        Assert.Equal(ScalarType.BFloat16, actual.dtype);
    }
}
