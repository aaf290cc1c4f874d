using System.Diagnostics;

namespace DistTrain.Training.Checkpointing;

/// <summary>
/// Fault injection for the checkpoint tests: DISTTRAIN_FAULT_CHECKPOINT=POINT@STEP[@RANK]. At
/// after-shards (files written, not voted), after-manifest (manifest written, folder not renamed)
/// or after-rename ("latest" not moved) it kills the process (SIGKILL, no cleanup); at io-error it
/// makes the write fail as a full disk does; at bug it throws an exception DistTrain does not expect,
/// which reaches the training step (the next poll of the save) as any unhandled exception there would.
/// Without RANK every rank is hit. Unset, it does nothing.
/// </summary>
static class CheckpointFaults
{
    static readonly (string Point, int Step, int? Rank)? Fault = Parse(Environment.GetEnvironmentVariable("DISTTRAIN_FAULT_CHECKPOINT"));

    public static void At(string point, int step, int rank)
    {
        if (Fault is not { } f || f.Point != point || f.Step != step || (f.Rank is { } r && r != rank)) return;
        if (point == "io-error") throw new IOException("No space left on device (injected by DISTTRAIN_FAULT_CHECKPOINT)");
        if (point == "bug") throw new InvalidOperationException($"an unexpected failure in the save of step {step} (injected by DISTTRAIN_FAULT_CHECKPOINT)");
        Process.GetCurrentProcess().Kill();
    }

    static (string, int, int?)? Parse(string? value) => value?.Split('@') switch
    {
        [var point, var step] when int.TryParse(step, out var s) => (point, s, null),
        [var point, var step, var rank] when int.TryParse(step, out var s) && int.TryParse(rank, out var r) => (point, s, r),
        _ => null,
    };
}
