using static TorchSharp.torch;

namespace DistTrain.Model.Inference;

/// <summary>
/// How the next token is chosen: temperature 0 is greedy (argmax); otherwise softmax(logits / temperature)
/// over the <see cref="TopK"/> most likely tokens (0: all), sampled with a generator seeded by <see cref="Seed"/>.
/// </summary>
public sealed record SamplingOptions(double Temperature = 1.0, int TopK = 0, long Seed = 0)
{
    public bool Greedy => Temperature == 0;
}

/// <summary>Draws tokens from logits; one per generation (it owns the seeded generator, so a seed repeats a run).</summary>
public sealed class TokenSampler : IDisposable
{
    readonly SamplingOptions _options;
    readonly Generator _generator;

    public TokenSampler(SamplingOptions options)
    {
        if (options.Temperature < 0 || !double.IsFinite(options.Temperature)) throw new ArgumentOutOfRangeException(nameof(options), options.Temperature, "temperature must be 0 (greedy) or positive");
        if (options.TopK < 0) throw new ArgumentOutOfRangeException(nameof(options), options.TopK, "top-k must be 0 (all tokens) or positive");
        _options = options;
        _generator = new Generator((ulong)options.Seed);
    }

    /// <summary>logits: (V) of one position, any dtype and device -> the chosen token id.</summary>
    public long Next(Tensor logits)
    {
        using var scope = NewDisposeScope();
        var x = logits.to(ScalarType.Float32, CPU);
        if (_options.Greedy) return x.argmax().item<long>();
        x = x.div(Scalars.Of(_options.Temperature));
        if (_options.TopK > 0 && _options.TopK < x.shape[0])
        {
            var kth = x.topk(_options.TopK).values[^1];                        // the k-th largest logit
            x = x.masked_fill(x.lt(kth), Scalars.Of(double.NegativeInfinity));  // ties with it stay in
        }
        var probs = nn.functional.softmax(x, 0);
        return multinomial(probs, 1, generator: _generator).item<long>();
    }

    public void Dispose() => _generator.Dispose();
}
