using DistTrain.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Model.Tests;

/// <summary>
/// Re-computes MUDDFormer straight from the formulas of the official modeling_muddformer.py,
/// with plain tensor ops on the model's own weights (explicit softmax and mask instead of SDPA,
/// the official rotary reshape, a loop over streams and layers), and compares log-probabilities.
/// </summary>
public class OfficialFormulaTests
{
    [Fact]
    public void MuddFormerLogProbsEqualTheOfficialFormulasInFp32()
    {
        var config = TinyModels.Config(Architecture.MUDDFormer, layers: 3);
        using var model = TinyModels.Build(config);
        var tokens = TinyModels.Tokens(config, batch: 2, seqLen: 12);
        model.eval();
        using var _ = no_grad();

        var ours = nn.functional.log_softmax(model.forward(tokens), -1);
        var reference = nn.functional.log_softmax(Reference(model.state_dict(), config, tokens), -1);

        double maxDiff = (ours - reference).abs().max().item<float>();
        Assert.True(maxDiff < 1e-5, $"max |Δ log p| = {maxDiff:E2}");
        Assert.True(reference.std().item<float>() > 0.1);   // not a trivially flat distribution
    }

    static Tensor Reference(Dictionary<string, Tensor> w, ModelConfig c, Tensor tokens)
    {
        long b = tokens.shape[0], t = tokens.shape[1], h = c.NHead, hd = c.HeadDim, d = c.Dim;
        double eps = c.NormEps;
        Tensor Rms(Tensor x, Tensor? weight)
        {
            var y = x * rsqrt((x * x).mean([-1], keepdim: true) + eps);
            return weight is null ? y : y * weight;
        }
        Tensor Lin(Tensor x, string name) => matmul(x, w[name].t());

        // precompute_freqs_cis, cached in bf16 as the official code does
        var freqs = 1.0 / pow(c.RopeBase, arange(0, hd, 2, ScalarType.Float32)[..(int)(hd / 2)] / hd);
        var angles = outer(arange(t, ScalarType.Float32), freqs);
        var cos = angles.cos().to(ScalarType.BFloat16).to(ScalarType.Float32).view(1, t, 1, hd / 2);
        var sin = angles.sin().to(ScalarType.BFloat16).to(ScalarType.Float32).view(1, t, 1, hd / 2);
        Tensor Rotary(Tensor x)   // apply_rotary_emb(mode='half')
        {
            var xs = x.reshape(b, t, h, 2, hd / 2).transpose(-1, -2);
            var x0 = xs[.., .., .., .., 0];
            var x1 = xs[.., .., .., .., 1];
            return stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], -1).flatten(3);
        }
        Tensor Attention(int i, Tensor xq, Tensor xk, Tensor xv)
        {
            string p = $"layers.{i}.attention.";
            var q = Lin(xq, p + "wq.weight").view(b, t, h, hd);
            var k = Lin(xk, p + "wk.weight").view(b, t, h, hd);
            var v = Lin(xv, p + "wv.weight").view(b, t, h, hd);
            q = Rms(q, w[p + "q_norm.weight"]);
            k = Rms(k, w[p + "k_norm.weight"]);
            (q, k, v) = (Rotary(q).transpose(1, 2), Rotary(k).transpose(1, 2), v.transpose(1, 2));
            var logits = matmul(q, k.transpose(-2, -1)) * (1 / Math.Sqrt(hd));
            var mask = ones(t, t, ScalarType.Bool).tril();
            logits = where(mask, logits, full_like(logits, float.MinValue));
            var y = matmul(logits.softmax(-1), v).transpose(1, 2).reshape(b, t, d);
            return Lin(y, p + "wo.weight");
        }
        Tensor FeedForward(int i, Tensor x)
        {
            string p = $"layers.{i}.feed_forward.";
            return Lin(nn.functional.silu(Lin(x, p + "w1.weight")) * Lin(x, p + "w3.weight"), p + "w2.weight");
        }

        var x = w["tok_embeddings.weight"].index_select(0, tokens.view(-1)).view(b, t, d);
        var hiddens = new List<Tensor> { x };
        Tensor[] streams = [];
        for (int i = 0; i < c.NLayer; i++)
        {
            Tensor res, nq, nk, nv;
            if (i == 0)
            {
                res = x;
                nq = nk = nv = Rms(x, w["layers.0.attention_norm.weight"]);
            }
            else
            {
                res = streams[3];                                        // x[-1]: R
                nq = Rms(streams[0], w[$"layers.{i}.attention_norms.0.weight"]);
                nk = Rms(streams[1], w[$"layers.{i}.attention_norms.1.weight"]);
                nv = Rms(streams[2], w[$"layers.{i}.attention_norms.2.weight"]);
            }
            var hh = res + Attention(i, nq, nk, nv);
            var output = hh + FeedForward(i, Rms(hh, w[$"layers.{i}.ffn_norm.weight"]));
            hiddens.Add(output);

            // MultiwayDynamicDenseBlock: RMSnormNoscale, w1, GELU, w2, 'B T (C L) -> C B T L', + dense_bs
            int streamsOut = i == c.NLayer - 1 ? 1 : 4, l = i + 2;
            var dw = Lin(nn.functional.gelu(Lin(Rms(output, null), $"dynamic_dense.{i}.w1.weight")), $"dynamic_dense.{i}.w2.weight");
            dw = dw.view(b, t, streamsOut, l);
            var bs = w[$"dense_bs.{i}"];
            streams = new Tensor[streamsOut];
            for (int s = 0; s < streamsOut; s++)
            {
                var sum = zeros(b, t, d);
                for (int j = 0; j < l; j++)
                    sum = sum + (dw[.., .., s, j] + bs[s, j]).unsqueeze(-1) * hiddens[j];
                streams[s] = sum;
            }
        }
        return Lin(Rms(streams[0], w["norm.weight"]), "output.weight");
    }

    [Fact]
    public void AFreshDenseFormerComputesExactlyWhatTransformerPlusPlusComputes()
    {
        // DWA weights start one-hot on the newest output, so with equal weights the two agree.
        using var baseline = TinyModels.Build(TinyModels.Config(Architecture.TransformerPP), seed: 3);
        manual_seed(3);
        using var dense = new LanguageModel(TinyModels.Config(Architecture.DenseFormer));
        using (no_grad())
        {
            var source = baseline.state_dict();
            foreach (var (name, p) in dense.named_parameters())
                if (source.TryGetValue(name, out var s)) p.copy_(s);
        }
        var tokens = TinyModels.Tokens(baseline.Config, 2, 10);
        using var _ = no_grad();
        double diff = (baseline.forward(tokens) - dense.forward(tokens)).abs().max().item<float>();
        Assert.Equal(0, diff, 6);
    }
}
