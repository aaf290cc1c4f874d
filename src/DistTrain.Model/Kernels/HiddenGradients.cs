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
/// A mix may also defer its parts for h_0..h_{count-2} (<see cref="Defer"/>): the next mix in backward
/// (over count − 1 hiddens) adds them with its own in the same pass, so each buffer is read and written
/// once for two mixes (the fused kernels do; the reference never defers).
/// A new object per forward pass (micro-batches of gradient accumulation each have their own); after a
/// whole backward it holds nothing.
/// </summary>
public sealed class HiddenGradients
{
    readonly Dictionary<int, Tensor> _buffers = [];
    readonly HashSet<int> _handedOver = [];
    DeferredMix? _deferred;

    /// <summary>Whether the mix over <paramref name="count"/> hiddens (h_0..h_{count-1}; count ≥ 2) is the last in backward to read h_<paramref name="j"/>.</summary>
    public static bool HandsOver(int j, int count) => Math.Max(j + 1, 2) == count;

    /// <summary>Buffers and deferred mixes held now: 0 after a whole backward (tests).</summary>
    public int Held
    {
        get { lock (_buffers) return _buffers.Count + (_deferred is null ? 0 : 1); }
    }

    /// <summary>
    /// Keeps a mix's stream gradients and weights (the caller's handles, detached from any dispose scope here)
    /// for the next mix in backward to add its parts for h_0..h_{count-2}. One at a time.
    /// </summary>
    public void Defer(DeferredMix mix)
    {
        lock (_buffers)
        {
            if (_deferred is not null)
                throw new InvalidOperationException($"a mix over {mix.Count} hiddens deferred its gradients while the one over {_deferred.Count} still waits");
            foreach (var g in mix.StreamGrads) g.DetachFromDisposeScope();
            mix.Weights.DetachFromDisposeScope();
            mix.Bias?.DetachFromDisposeScope();
            _deferred = mix;
        }
    }

    /// <summary>
    /// The deferred mix the mix over <paramref name="count"/> hiddens must add (the one over count + 1), or
    /// null; the caller owns it. A deferred mix of another count means the backward order broke: that throws.
    /// </summary>
    public DeferredMix? TakeDeferred(int count)
    {
        lock (_buffers)
        {
            if (_deferred is null) return null;
            if (_deferred.Count != count + 1)
                throw new InvalidOperationException(
                    $"the mix over {count} hiddens ran backward while the one over {_deferred.Count} waits for the mix over {_deferred.Count - 1}; " +
                    "the mixes of one forward pass must run backward once each, from the last layer down");
            var taken = _deferred;
            _deferred = null;
            return taken;
        }
    }

    /// <summary>Removes and returns h_j's buffer (null: no mix has added to it yet); the caller owns it.</summary>
    public Tensor? Take(int j)
    {
        lock (_buffers)
            return _buffers.Remove(j, out var buffer) ? buffer : null;
    }

    /// <summary>
    /// After the mix over <paramref name="count"/> hiddens has written or added its part for h_j into
    /// <paramref name="buffer"/>: the buffer for autograd when this mix is h_j's last reader, else null
    /// (kept here, detached from any dispose scope, until that reader). A mix that adds to h_j after
    /// the hand-over would lose its part: that throws instead (the backward order this relies on broke,
    /// or a graph was run backward twice).
    /// </summary>
    public Tensor? Settle(int j, int count, Tensor buffer)
    {
        lock (_buffers)
        {
            if (_handedOver.Contains(j) || _buffers.ContainsKey(j))
                throw new InvalidOperationException(
                    $"hidden {j}: a mix over {count} hiddens ran backward after h_{j}'s gradient buffer was " +
                    (_handedOver.Contains(j) ? "handed to autograd" : "stored by another mix") +
                    "; the mixes of one forward pass must run backward once each, from the last layer down (retain_graph is not supported)");
            if (HandsOver(j, count))
            {
                _handedOver.Add(j);
                return buffer;
            }
            buffer.DetachFromDisposeScope();
            _buffers.Add(j, buffer);
            return null;
        }
    }

    /// <summary>
    /// The reference routing of one mix's gradient <paramref name="own"/> ((B, T, D), any strides) for h_j
    /// in a mix over <paramref name="count"/> hiddens: added to the buffer, then <see cref="Settle"/>.
    /// </summary>
    public Tensor? Route(int j, int count, Tensor own)
    {
        lock (_buffers)
            if (_deferred is not null)
                throw new InvalidOperationException($"the mix over {_deferred.Count} hiddens deferred its gradients to a fused mix, but the mix over {count} ran the reference");
        var buffer = Take(j);
        if (buffer is null) buffer = own.contiguous();
        else buffer.PlusInPlace(own);
        return Settle(j, count, buffer);
    }
}

/// <summary>
/// A mix over <paramref name="Count"/> hiddens whose gradients for h_0..h_{Count-2} are not yet added:
/// its C stream gradients (B, T, D), weights (C, B, T, Count) and the bias (C, Count) added to them, or null, as its kernels use them.
/// </summary>
public sealed record DeferredMix(int Count, Tensor[] StreamGrads, Tensor Weights, Tensor? Bias = null) : IDisposable
{
    public void Dispose()
    {
        foreach (var g in StreamGrads) g.Dispose();
        Weights.Dispose();
        Bias?.Dispose();
    }
}
