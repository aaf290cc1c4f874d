using DistTrain.Cuda;

namespace DistTrain.Training.Diagnostics;

/// <summary>
/// What one phase of the timed, unsynchronised steps cost the host (enqueueing) and the GPU (running), and
/// the GPU's backlog when the phase began: near zero, the GPU had run dry and waited for the host there.
/// </summary>
public sealed record PhaseLead(string Phase, double HostMs, double GpuMs, double MeanLeadMs, double MinLeadMs);

/// <summary>
/// A <see cref="GpuTimeline"/> mark at every phase boundary of steps [first, end) (and one at the end of step
/// first - 1, which must follow a device sync). Nothing synchronises meanwhile, so the steps run as in training.
/// </summary>
public sealed class LaunchTimeline(int first, int end, int device) : ITrainingObserver, IDisposable
{
    readonly GpuTimeline _timeline = new(device);

    public void OnPhase(int step, StepPhase phase)
    {
        if (step >= first && step < end) _timeline.Mark(phase.ToString());
    }

    public void OnStep(int step)
    {
        if (step >= first - 1 && step < end) _timeline.Mark("end");
    }

    /// <summary>Per phase, in the order a step runs them; call after the run (it waits for the last mark).</summary>
    public IReadOnlyList<PhaseLead> Phases() => Summarise(_timeline.Read());

    /// <summary>
    /// Marks (a phase's name where it begins, "end" where a step ends; host and GPU ms since the first mark, an "end"
    /// right after a device sync) -> per phase the mean host and GPU ms from its mark to the next, and the mean and least
    /// GPU backlog (GPU − host) at its mark. The first step is left out: it starts from the sync's empty queue.
    /// </summary>
    public static IReadOnlyList<PhaseLead> Summarise(IReadOnlyList<(string Label, double HostMs, double GpuMs)> marks)
    {
        var spans = new List<(string Phase, double Host, double Gpu, double Lead)>();
        int ends = 0;
        for (int i = 0; i + 1 < marks.Count; i++)
        {
            var (label, host, gpu) = marks[i];
            if (label == "end") ends++;
            if (label == "end" || ends < 2) continue;   // between steps nothing is enqueued; before the second end: the first step
            spans.Add((label, marks[i + 1].HostMs - host, marks[i + 1].GpuMs - gpu, gpu - host));
        }
        return spans.GroupBy(s => s.Phase)
            .Select(g => new PhaseLead(g.Key, g.Average(s => s.Host), g.Average(s => s.Gpu), g.Average(s => s.Lead), g.Min(s => s.Lead)))
            .ToList();
    }

    public void Dispose() => _timeline.Dispose();
}
