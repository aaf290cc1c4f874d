using DistTrain.Training.Checkpointing;

namespace DistTrain.Training;

/// <summary>Several observers as one, called in order (nulls are skipped).</summary>
public sealed class Observers(params ITrainingObserver?[] observers) : ITrainingObserver
{
    readonly ITrainingObserver[] _all = [.. observers.OfType<ITrainingObserver>()];

    public void OnKernels(string description) { foreach (var o in _all) o.OnKernels(description); }
    public void OnStart(int totalSteps, string runDirectory) { foreach (var o in _all) o.OnStart(totalSteps, runDirectory); }
    public void OnContinued(string runDirectory, int step, int superseded, string kept) { foreach (var o in _all) o.OnContinued(runDirectory, step, superseded, kept); }
    public void OnResume(ResumeReport resume) { foreach (var o in _all) o.OnResume(resume); }
    public void OnStep(int step) { foreach (var o in _all) o.OnStep(step); }
    public void OnPhase(int step, StepPhase phase) { foreach (var o in _all) o.OnPhase(step, phase); }
    public void OnCheckpoint(CheckpointReport report) { foreach (var o in _all) o.OnCheckpoint(report); }
    public void OnSnapshot(Snapshots.SnapshotReport report) { foreach (var o in _all) o.OnSnapshot(report); }
    public void OnSnapshotRestored(Snapshots.SnapshotRestore snapshot) { foreach (var o in _all) o.OnSnapshotRestored(snapshot); }
    public void OnReport(StepReport report) { foreach (var o in _all) o.OnReport(report); }
}
