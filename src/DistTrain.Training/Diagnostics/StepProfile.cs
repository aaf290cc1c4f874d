using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training.Diagnostics;

/// <summary>
/// Times the phases of steps [<paramref name="first"/>, <paramref name="first"/> + <paramref name="count"/>).
/// A GPU runs ahead of the host, so on CUDA each phase boundary of a profiled step synchronises the
/// device (only there: other steps run unsynchronised).
/// </summary>
public sealed class StepProfile(int first, int count, bool cuda) : ITrainingObserver
{
    readonly double[] _seconds = new double[Enum.GetValues<StepPhase>().Length];
    StepPhase? _phase;
    long _mark;

    public int Steps { get; private set; }

    /// <summary>Mean seconds per step in each phase.</summary>
    public IReadOnlyDictionary<StepPhase, double> PerStep =>
        Enum.GetValues<StepPhase>().ToDictionary(p => p, p => Steps == 0 ? 0 : _seconds[(int)p] / Steps);

    bool Profiled(int step) => step >= first && step < first + count;

    public void OnPhase(int step, StepPhase phase)
    {
        if (!Profiled(step)) return;
        Close();
        _phase = phase;
    }

    public void OnStep(int step)
    {
        if (!Profiled(step)) return;
        Close();
        _phase = null;
        Steps++;
    }

    void Close()
    {
        if (cuda) torch.cuda.synchronize();
        long now = Stopwatch.GetTimestamp();
        if (_phase is { } p) _seconds[(int)p] += Stopwatch.GetElapsedTime(_mark, now).TotalSeconds;
        _mark = now;
    }
}
