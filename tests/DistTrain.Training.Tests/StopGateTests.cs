using DistTrain.Training.Stopping;

namespace DistTrain.Training.Tests;

/// <summary>Where the training loop stops: alone after the step in progress; in a job after the step every rank agreed.</summary>
public class StopGateTests
{
    [Fact]
    public void AloneTheRunStopsAfterTheStepInProgress()
    {
        var gate = new StopGate();
        gate.Begin(100);   // resumed at step 100
        Assert.False(gate.StopAfter(101, CancellationToken.None));
        gate.StopAfterCurrentStep();   // the signal lands while step 102 runs
        Assert.True(gate.StopAfter(102, CancellationToken.None));
    }

    [Fact]
    public async Task ARankWaitsOneStepPastItsAcknowledgementUntilTheStopStepIsKnown()
    {
        var gate = new StopGate();
        gate.Begin(0);
        Assert.False(gate.StopAfter(4, CancellationToken.None));
        Assert.Equal(4, gate.Acknowledge());
        Assert.Equal(4, gate.Acknowledge());   // asked again (every heartbeat): the same answer
        // another rank had finished 5 steps when asked: the coordinator says stop after 6
        var waiting = Task.Run(() => gate.StopAfter(5, CancellationToken.None));
        await Task.Delay(300);
        Assert.False(waiting.IsCompleted);   // step 5 is the limit: it waits for the decision
        gate.StopAt(6);
        Assert.False(await waiting.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.True(gate.StopAfter(6, CancellationToken.None));
    }

    [Fact]
    public void AWaitingRankGivesUpWhenTheJobFails()
    {
        var gate = new StopGate();
        gate.Begin(10);
        gate.Acknowledge();
        using var failed = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        Assert.Throws<OperationCanceledException>(() => gate.StopAfter(11, failed.Token));
    }
}
