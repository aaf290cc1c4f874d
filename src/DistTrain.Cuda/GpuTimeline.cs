using System.Diagnostics;
using static DistTrain.Cuda.Native.CudaDriver;

namespace DistTrain.Cuda;

/// <summary>
/// Marks on the legacy default stream (the one libtorch and our kernels use), each with the host's clock
/// beside it: read back, they say when the host enqueued each point and when the GPU reached it. The
/// difference is the GPU's backlog there (the host's lead); near zero, the GPU had run dry and waited for
/// the host. The first mark must follow a device sync, so that both clocks start together.
/// </summary>
public sealed class GpuTimeline : IDisposable
{
    readonly CudaDevice _device;
    readonly List<(string Label, nint Event, long HostTicks)> _marks = [];

    public GpuTimeline(int device) => _device = CudaDevice.Get(device);

    /// <summary>Records a mark now: an event on stream 0 and the host's time.</summary>
    public void Mark(string label)
    {
        _device.MakeCurrent();
        Check(cuEventCreate(out var e, 0), "cuEventCreate");
        Check(cuEventRecord(e, 0), "cuEventRecord");
        _marks.Add((label, e, Stopwatch.GetTimestamp()));
    }

    /// <summary>Waits for the last mark; every mark's host and GPU time in ms since the first.</summary>
    public IReadOnlyList<(string Label, double HostMs, double GpuMs)> Read()
    {
        if (_marks.Count == 0) return [];
        _device.MakeCurrent();
        Check(cuEventSynchronize(_marks[^1].Event), "cuEventSynchronize");
        var (_, first, start) = _marks[0];
        return _marks.Select(m =>
        {
            Check(cuEventElapsedTime(out float gpu, first, m.Event), "cuEventElapsedTime");
            return (m.Label, Stopwatch.GetElapsedTime(start, m.HostTicks).TotalMilliseconds, (double)gpu);
        }).ToList();
    }

    public void Dispose()
    {
        foreach (var (_, e, _) in _marks) cuEventDestroy_v2(e);
        _marks.Clear();
    }

    static void Check(int result, string call)
    {
        if (result != Success) throw new CudaException(result, $"{call} failed: {Describe(result)}");
    }
}
