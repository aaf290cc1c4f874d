using System.Diagnostics;

namespace DistTrain.Training.Checkpointing;

/// <summary>
/// Crash injection for the crash-safety tests: DISTTRAIN_FAULT_CHECKPOINT=POINT@STEP kills this
/// process (SIGKILL, no cleanup) at POINT of the save of STEP — after-shards (files written, no
/// manifest), after-manifest (manifest written, folder not renamed) or after-rename (renamed,
/// "latest" not moved). Unset, it does nothing.
/// </summary>
static class CheckpointFaults
{
    static readonly (string Point, int Step)? Fault = Parse(Environment.GetEnvironmentVariable("DISTTRAIN_FAULT_CHECKPOINT"));

    public static void At(string point, int step)
    {
        if (Fault is { } f && f.Point == point && f.Step == step) Process.GetCurrentProcess().Kill();
    }

    static (string, int)? Parse(string? value) =>
        value?.Split('@') is [var point, var step] && int.TryParse(step, out var s) ? (point, s) : null;
}
