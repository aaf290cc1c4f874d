using DistTrain.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training;

/// <summary>
/// Turns the window reader into (inputs, targets) batches on the device: B windows of T+1
/// tokens -> x = w[:, :-1], y = w[:, 1:], both (B, T) int64.
/// </summary>
public sealed class BatchLoader : IDisposable
{
    readonly TokenWindowReader _reader;
    readonly int _batch, _window;
    readonly long[] _buffer;
    readonly Device _device;

    public BatchLoader(TokenWindowReader reader, int batch, int seqLen, Device device)
    {
        (_reader, _batch, _window, _device) = (reader, batch, seqLen + 1, device);
        _buffer = new long[batch * _window];
    }

    /// <summary>Seconds the step spent waiting for the read-ahead thread (near zero when it keeps up).</summary>
    public double WaitSeconds => _reader.WaitTime.TotalSeconds;
    public DataCursor Cursor => _reader.Cursor;

    /// <summary>Null when a non-looping reader runs out before a full batch.</summary>
    public (Tensor X, Tensor Y)? Next()
    {
        for (int i = 0; i < _batch; i++)
            if (!_reader.TryNext(_buffer.AsSpan(i * _window, _window))) return null;
        using var host = tensor(_buffer, [_batch, _window]);
        // to a GPU from pinned memory without blocking: a pageable copy would be a host sync every micro-step
        using var staged = _device.type == DeviceType.CUDA ? host.pin_memory() : host.alias();
        using var windows = staged.to(_device, non_blocking: true);
        return (windows[.., ..^1].contiguous(), windows[.., 1..].contiguous());
    }

    public void Dispose() => _reader.Dispose();
}
