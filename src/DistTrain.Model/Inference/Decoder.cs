using static TorchSharp.torch;

namespace DistTrain.Model.Inference;

/// <summary>
/// Autoregressive generation with a <see cref="KvCache"/>: the prompt runs once, then one token per step
/// (its keys and values appended to the cache). Model-only: token ids in, token ids out; the tokenizer
/// and the checkpoint belong to the caller.
/// </summary>
public static class Decoder
{
    /// <summary>
    /// Up to <paramref name="maxTokens"/> tokens after <paramref name="prompt"/> (1..block_size ids), stopping early
    /// after <paramref name="stopToken"/> (included) or when prompt and output fill block_size. <paramref name="onToken"/>
    /// sees each token as it is chosen (to print as it goes).
    /// </summary>
    public static IReadOnlyList<long> Generate(LanguageModel model, IReadOnlyList<long> prompt, int maxTokens, SamplingOptions sampling,
        long? stopToken = null, Action<long>? onToken = null)
    {
        var config = model.Config;
        if (maxTokens < 1) throw new ArgumentException($"max tokens {maxTokens}: generate at least one", nameof(maxTokens));
        if (prompt.Count == 0) throw new ArgumentException("the prompt is empty: generation needs at least one token", nameof(prompt));
        if (prompt.Count > config.BlockSize) throw new ArgumentException($"the prompt has {prompt.Count} tokens, more than block_size {config.BlockSize}", nameof(prompt));
        if (prompt.FirstOrDefault(t => t < 0 || t >= config.VocabSize, -1) is var bad and not -1)
            throw new ArgumentException($"token {bad} is outside the vocabulary (0..{config.VocabSize - 1})", nameof(prompt));

        model.eval();
        using var noGrad = no_grad();
        using var cache = new KvCache(config, (int)Math.Min(config.BlockSize, (long)prompt.Count + maxTokens - 1));   // the last token is never run
        using var sampler = new TokenSampler(sampling);
        var device = model.parameters().First().device;
        var output = new List<long>();
        var next = prompt.ToArray();
        while (output.Count < maxTokens && cache.Length + next.Length <= config.BlockSize)
        {
            using var scope = NewDisposeScope();
            var logits = model.forward(tensor(next, device: device).unsqueeze(0), cache);   // (1, T, V)
            long token = sampler.Next(logits[0, -1]);
            output.Add(token);
            onToken?.Invoke(token);
            if (token == stopToken) break;
            next = [token];
        }
        return output;
    }
}
