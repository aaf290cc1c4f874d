namespace DistTrain.Model;

/// <summary>What a checkpointed layer keeps for backward.</summary>
public enum CheckpointKind
{
    /// <summary>Every activation is kept.</summary>
    None,
    /// <summary>Recompute each block from its saved inputs (with MUDD: the four mixed streams Q, K, V, R).</summary>
    Block,
    /// <summary>The dense mixing (and the dynamic weights that drive it) moves inside the recomputed region: only the layer outputs, alive anyway, are kept.</summary>
    Mudd,
}

/// <summary>
/// Activation checkpointing, applied to the model from outside (the trainer sets it from the
/// config): a kind, and which layers it covers (every <paramref name="Every"/>-th, from layer 0).
/// </summary>
public sealed record ActivationCheckpointing(CheckpointKind Kind, int Every = 1)
{
    public static readonly ActivationCheckpointing Off = new(CheckpointKind.None);

    /// <summary>
    /// Whether layer <paramref name="layer"/> of <paramref name="layers"/> is recomputed. Never the last: its backward
    /// comes right after the loss, so its activations would be rebuilt at once, for the price of its forward and no
    /// memory saved at the peak (the loss's chunk before backward, the layer's set during it).
    /// </summary>
    public bool Covers(int layer, int layers) => Kind != CheckpointKind.None && layer % Every == 0 && layer < layers - 1;

    public static readonly IReadOnlyDictionary<string, CheckpointKind> Names = new Dictionary<string, CheckpointKind>
    {
        ["none"] = CheckpointKind.None, ["block"] = CheckpointKind.Block, ["mudd"] = CheckpointKind.Mudd,
    };
}
