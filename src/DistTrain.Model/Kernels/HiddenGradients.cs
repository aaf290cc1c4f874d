using static TorchSharp.torch;

namespace DistTrain.Model.Kernels;

/// <summary>
/// One forward pass's gradient buffers for the MUDD hiddens h_0..h_N (one (B, T, D) tensor each, in
/// the hiddens' dtype, allocated by the first backward that reaches it). The mix after layer k reads
/// h_0..h_{k+1}; autograd runs those mixes' backward from the last layer down (mix k+1 depends on mix
/// k through block k+1), so the mix over the fewest hiddens that reads h_j runs last among h_j's
/// readers. Every other mix adds its contribution to h_j here in place and gives autograd nothing for
/// h_j; that last one hands autograd the buffer plus its own part. Per layer this replaces L separate
/// gradient tensors that autograd would add one by one (O(L²) full-size additions per step) with one
/// in-place addition each. Readers other than the mixes (dynamic_dense.{k} reads h_{k+1}, block 0 reads
/// h_0) still return their gradients to autograd, which adds them to the handed-over buffer.
/// With the mudd checkpointing policy the mixes run again inside Recompute's backward on detached copies
/// of the hiddens: the order is the same, and buffers are keyed by the hidden's index, not its tensor,
/// so the recomputed mixes must use this same object (ForwardMudd's closures capture it).
/// A new object per forward pass (micro-batches of gradient accumulation each have their own); after a
/// whole backward it holds nothing.
/// </summary>
public sealed class HiddenGradients
{
    readonly Dictionary<int, Tensor> _buffers = [];

    /// <summary>Whether the mix over <paramref name="count"/> hiddens (h_0..h_{count-1}; count ≥ 2) is the last in backward to read h_<paramref name="j"/>.</summary>
    public static bool HandsOver(int j, int count) => Math.Max(j + 1, 2) == count;

    /// <summary>Buffers held now: 0 after a whole backward (tests).</summary>
    public int Held
    {
        get { lock (_buffers) return _buffers.Count; }
    }

    /// <summary>Removes and returns h_j's buffer (null: no mix has added to it yet); the caller owns it.</summary>
    public Tensor? Take(int j)
    {
        lock (_buffers)
            return _buffers.Remove(j, out var buffer) ? buffer : null;
    }

    /// <summary>Stores h_j's buffer (detached from any dispose scope: it lives until the mix that hands it over).</summary>
    public void Keep(int j, Tensor buffer)
    {
        buffer.DetachFromDisposeScope();
        lock (_buffers)
            if (!_buffers.TryAdd(j, buffer))
                throw new InvalidOperationException($"hidden {j} already has a gradient buffer: a mix's backward ran twice in one pass (retain_graph?)");
    }

    /// <summary>
    /// The reference routing of one mix's gradient <paramref name="own"/> ((B, T, D), any strides) for h_j
    /// in a mix over <paramref name="count"/> hiddens: added to the buffer, then either the buffer for
    /// autograd (the last reader) or null (kept here).
    /// </summary>
    public Tensor? Route(int j, int count, Tensor own)
    {
        var buffer = Take(j);
        if (buffer is null) buffer = own.contiguous();
        else buffer.PlusInPlace(own);
        if (HandsOver(j, count))
            return buffer;
        Keep(j, buffer);
        return null;
    }
}
