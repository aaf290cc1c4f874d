using DistTrain.Training.Diagnostics;

namespace DistTrain.Training.Tests;

public class LaunchTimelineTests
{
    [Fact]
    public void EachPhaseGetsItsHostAndGpuTimeAndTheGpusBacklogWhereItBeginsFromTheSecondStepOn()
    {
        // three steps after a synced start: the host enqueues each forward in 2 ms and each backward in 3 ms, the GPU runs them
        // in 4 and 6 ms, so its backlog grows; nothing is enqueued between steps. The first step, which starts from the sync's
        // empty queue (a backlog of 0 by construction), is left out.
        (string, double, double)[] marks =
        [
            ("end", 0, 0),
            ("Forward", 0.5, 0.5), ("Backward", 2.5, 4.5), ("end", 5.5, 10.5),
            ("Forward", 6, 10.5), ("Backward", 8, 14.5), ("end", 11, 20.5),
            ("Forward", 11.5, 20.5), ("Backward", 13.5, 24.5), ("end", 16.5, 30.5),
        ];
        var phases = LaunchTimeline.Summarise(marks);
        Assert.Equal(["Forward", "Backward"], phases.Select(p => p.Phase));
        var (forward, backward) = (phases[0], phases[1]);
        Assert.Equal(2, forward.HostMs, 9);
        Assert.Equal(4, forward.GpuMs, 9);
        Assert.Equal(3, backward.HostMs, 9);
        Assert.Equal(6, backward.GpuMs, 9);
        Assert.Equal((4.5 + 9) / 2, forward.MeanLeadMs, 9);
        Assert.Equal(4.5, forward.MinLeadMs, 9);
        Assert.Equal((6.5 + 11) / 2, backward.MeanLeadMs, 9);
        Assert.Equal(6.5, backward.MinLeadMs, 9);
    }

    [Fact]
    public void AGpuThatWaitsForTheHostShowsNoBacklog()
    {
        // the host takes longer than the GPU for every phase: the GPU reaches each mark as soon as it is enqueued
        (string, double, double)[] marks =
        [
            ("end", 0, 0),
            ("Forward", 1, 1), ("Backward", 6, 6), ("end", 16, 16),
            ("Forward", 17, 17), ("Backward", 22, 22), ("end", 32, 32),
        ];
        var phases = LaunchTimeline.Summarise(marks);
        Assert.All(phases, p => Assert.Equal(0, p.MeanLeadMs, 9));
        Assert.Equal(5, phases[0].GpuMs, 9);
        Assert.Equal(10, phases[1].HostMs, 9);
    }

    [Fact]
    public void NoMarksNoPhases() => Assert.Empty(LaunchTimeline.Summarise([]));
}
