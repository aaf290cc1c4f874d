using static TorchSharp.torch;

namespace DistTrain.Model.Inference;

/// <summary>
/// The keys and values of every attention layer for the positions already run, so that a forward
/// over new tokens (<see cref="LanguageModel.forward(Tensor, KvCache)"/>) runs only those tokens.
/// Attention is the only op that mixes positions: the MUDD and DenseFormer connections mix per token,
/// so the new tokens' hiddens at every layer are all they need. Buffers (B, H, capacity, d) per
/// layer are allocated on first use, in the keys' dtype and device, and owned here.
/// </summary>
public sealed class KvCache : IDisposable
{
    readonly LayerKv[] _layers;
    readonly int _capacity, _blockSize;

    /// <param name="capacity">positions to hold (at most block_size, the default): what a generation will run</param>
    public KvCache(ModelConfig config, int? capacity = null)
    {
        _capacity = capacity ?? config.BlockSize;
        if (_capacity < 1 || _capacity > config.BlockSize)
            throw new ArgumentOutOfRangeException(nameof(capacity), _capacity, $"a cache holds 1..block_size ({config.BlockSize}) positions");
        _blockSize = config.BlockSize;
        _layers = Enumerable.Range(0, config.NLayer).Select(_ => new LayerKv(this)).ToArray();
    }

    /// <summary>Positions cached so far: the position of the next token.</summary>
    public int Length { get; private set; }

    /// <summary>The cache of attention layer <paramref name="layer"/>.</summary>
    public LayerKv this[int layer] => _layers[layer];

    /// <summary>Room for <paramref name="count"/> more positions, or an error naming block_size.</summary>
    public void Reserve(long count)
    {
        if (Length + count > _capacity)
            throw new ArgumentException(_capacity == _blockSize
                ? $"{Length} cached + {count} new positions exceed block_size {_capacity}"
                : $"{Length} cached + {count} new positions exceed the cache's {_capacity}");
    }

    /// <summary>Called once per forward, after every layer appended <paramref name="count"/> positions.</summary>
    public void Advance(long count) => Length += (int)count;

    internal int Capacity => _capacity;

    public void Dispose()
    {
        foreach (var layer in _layers) layer.Dispose();
    }
}

/// <summary>One attention layer's keys and values; positions 0..Length-1 of its buffers are valid.</summary>
public sealed class LayerKv : IDisposable
{
    readonly KvCache _owner;
    Tensor? _keys, _values;   // (B, H, block_size, d)

    internal LayerKv(KvCache owner) => _owner = owner;

    /// <summary>
    /// k, v: (B, H, T, d) of the new positions Length..Length+T-1 -> the keys and values of positions
    /// 0..Length+T-1 (B, H, Length+T, d), views of the buffers.
    /// </summary>
    public (Tensor Keys, Tensor Values) Append(Tensor k, Tensor v)
    {
        if (_keys is not null && _keys.shape[0] != k.shape[0])
            throw new ArgumentException($"a batch of {k.shape[0]} sequences; this cache holds {_keys.shape[0]}: use one KvCache per batch");
        if (_keys is null)
        {
            long[] shape = [k.shape[0], k.shape[1], _owner.Capacity, k.shape[3]];
            _keys = zeros(shape, k.dtype, k.device).DetachFromDisposeScope();
            _values = zeros(shape, v.dtype, v.device).DetachFromDisposeScope();
        }
        long start = _owner.Length, end = start + k.shape[2];
        using (var slot = _keys.narrow(2, start, k.shape[2])) slot.copy_(k);
        using (var slot = _values!.narrow(2, start, v.shape[2])) slot.copy_(v);
        return (_keys.narrow(2, 0, end), _values.narrow(2, 0, end));
    }

    /// <summary>
    /// The attention mask of T new queries over all Length+T keys: (T, Length+T) bool, query i sees keys
    /// 0..Length+i. Null where SDPA's is_causal is the same mask (nothing cached yet).
    /// </summary>
    public Tensor? Mask(long t, Device device)
    {
        int start = _owner.Length;
        if (start == 0) return null;
        return ones([t, start + t], ScalarType.Bool, device).tril(start);
    }

    public void Dispose()
    {
        _keys?.Dispose(); _values?.Dispose();
        _keys = _values = null;
    }
}
