using DistTrain.Training.Diagnostics;

namespace DistTrain.Training.Tests;

public class LaunchTimelineTests
{
    [Fact]
    public void EachPhaseGetsItsHostAndGpuTimeAndTheGpusBacklogWhereItBegins()
    {
        // two steps after a synced start: the host enqueues each forward in 2 ms and each backward in 3 ms, the GPU runs them in
        // 4 and 6 ms; the host runs ahead from the start, so the backlog at each phase grows, and nothing is enqueued between steps
        (string, double, double)[] marks =
        [
            ("end", 0, 0),
            ("Forward", 0.5, 0.5), ("Backward", 2.5, 4.5), ("end", 5.5, 10.5),
            ("Forward", 6, 10.5), ("Backward", 8, 14.5), ("end", 11, 20.5),
        ];
        var phases = LaunchTimeline.Summarise(marks);
        Assert.Equal(["Forward", "Backward"], phases.Select(p => p.Phase));
        var (forward, backward) = (phases[0], phases[1]);
        Assert.Equal(2, forward.HostMs, 9);
        Assert.Equal(4, forward.GpuMs, 9);
        Assert.Equal(3, backward.HostMs, 9);
        Assert.Equal(6, backward.GpuMs, 9);
        Assert.Equal((0 + 4.5) / 2, forward.MeanLeadMs, 9);   // 0 at the first (the GPU idle, waiting), 4.5 at the second
        Assert.Equal(0, forward.MinLeadMs, 9);
        Assert.Equal((2 + 6.5) / 2, backward.MeanLeadMs, 9);
        Assert.Equal(2, backward.MinLeadMs, 9);
    }

    [Fact]
    public void NoMarksNoPhases() => Assert.Empty(LaunchTimeline.Summarise([]));
}
