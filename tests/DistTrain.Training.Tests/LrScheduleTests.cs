using DistTrain.Training.Optim;

namespace DistTrain.Training.Tests;

public class LrScheduleTests
{
    [Fact]
    public void WarmsUpLinearlyThenDecaysByCosineToTheFloor()
    {
        var s = new LrSchedule(Lr: 1.0, WarmupSteps: 10, TotalSteps: 110, MinLrRatio: 0.1);
        Assert.Equal(0.1, s.At(0), 12);
        Assert.Equal(1.0, s.At(9), 12);
        Assert.Equal(1.0, s.At(10), 12);
        Assert.Equal(0.55, s.At(60), 12);               // halfway: floor + (1 - floor) / 2
        Assert.Equal(0.1, s.At(110), 12);
        Assert.Equal(0.1, s.At(500), 12);
    }
}
