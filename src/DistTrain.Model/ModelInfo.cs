using static TorchSharp.torch;

namespace DistTrain.Model;

/// <summary>Parameter counts by group, computed from the model itself (never estimated).</summary>
public sealed record ModelInfo(long Total, long Embedding, long Output, long Layers, long DenseConnections, long Norms)
{
    /// <summary>The dense-connection parameters as a fraction of the rest.</summary>
    public double DenseOverhead => (double)DenseConnections / (Total - DenseConnections);

    public static ModelInfo Of(LanguageModel model)
    {
        long total = 0, embedding = 0, output = 0, layers = 0, dense = 0, norms = 0;
        foreach (var (name, p) in model.named_parameters())
        {
            long n = p.numel();
            total += n;
            if (name.StartsWith("tok_embeddings.")) embedding += n;
            else if (name.StartsWith("output.")) output += n;
            else if (name.StartsWith("dense_bs.") || name.StartsWith("dynamic_dense.") || name.StartsWith("dwa.")) dense += n;
            else if (name.StartsWith("layers.")) layers += n;
            else norms += n;
        }
        return new ModelInfo(total, embedding, output, layers, dense, norms);
    }

}
