using DistTrain.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training;

/// <summary>
/// Turns this rank's shard readers into (inputs, targets) micro-batches on the device. A step's
/// local batch is <c>WindowsPerShard</c> windows from each owned shard in shard order, cut into
/// micro-batches: x = w[:, :-1], y = w[:, 1:], both (B, T) int64. With a ledger, every window's
/// (shard, epoch, index) is recorded.
/// </summary>
public sealed class BatchLoader : IDisposable
{
    readonly IReadOnlyList<(int Shard, TokenWindowReader Reader)> _readers;
    readonly int _perShard, _window;
    readonly Device _device;
    readonly Queue<long[]> _pending = new();
    readonly Queue<(int Shard, int Epoch, long Index)> _pendingIds = new();

    public BatchLoader(IReadOnlyList<(int Shard, TokenWindowReader Reader)> readers, int windowsPerShard, int seqLen, Device device)
    {
        (_readers, _perShard, _window, _device) = (readers, windowsPerShard, seqLen + 1, device);
    }

    /// <summary>The windows handed out since the last call, for the ledger.</summary>
    public List<(int Shard, int Epoch, long Index)> Taken { get; } = [];

    /// <summary>Seconds the step spent waiting for the read-ahead threads (near zero when they keep up).</summary>
    public double WaitSeconds => _readers.Sum(r => r.Reader.WaitTime.TotalSeconds);

    public IReadOnlyList<DataCursor> Cursors => _readers.Select(r => r.Reader.Cursor).ToList();

    /// <summary>Each owned shard's cursor; at a step boundary nothing is held back, so these resume exactly.</summary>
    public IReadOnlyDictionary<int, DataCursor> ShardCursors => _readers.ToDictionary(r => r.Shard, r => r.Reader.Cursor);

    /// <summary>The next micro-batch of <paramref name="batch"/> windows; null when a non-looping reader runs out.</summary>
    public (Tensor X, Tensor Y)? Next(int batch)
    {
        var buffer = new long[batch * _window];
        for (int i = 0; i < batch; i++)
        {
            if (_pending.Count == 0 && !Refill()) return null;
            _pending.Dequeue().CopyTo(buffer.AsSpan(i * _window));
            Taken.Add(_pendingIds.Dequeue());
        }
        using var host = tensor(buffer, [batch, _window]);
        // to a GPU from pinned memory without blocking: a pageable copy would be a host sync every micro-step
        using var staged = _device.type == DeviceType.CUDA ? host.pin_memory() : host.alias();
        using var windows = staged.to(_device, non_blocking: true);
        return (windows[.., ..^1].contiguous(), windows[.., 1..].contiguous());
    }

    // one round: WindowsPerShard windows from every owned shard, in shard order
    bool Refill()
    {
        foreach (var (shard, reader) in _readers)
        {
            for (int i = 0; i < _perShard; i++)
            {
                var window = new long[_window];
                if (!reader.TryNext(window, out long index)) return _pending.Count > 0;
                _pending.Enqueue(window);
                _pendingIds.Enqueue((shard, reader.Cursor.Epoch, index));   // the cursor right after a window carries its epoch
            }
        }
        return true;
    }

    public void Dispose()
    {
        foreach (var (_, reader) in _readers) reader.Dispose();
    }
}
