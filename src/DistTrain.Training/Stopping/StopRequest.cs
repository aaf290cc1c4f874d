namespace DistTrain.Training.Stopping;

/// <summary>
/// A graceful stop asked for from outside the training loop (SIGINT, SIGTERM, a peer's request through the
/// coordinator): the exit code it ends with, and, once the run stopped, at which step and with which checkpoint.
/// </summary>
public sealed class StopRequest
{
    /// <summary>Exit code of a stop started by SIGINT (Ctrl-C): 128 + 2, as a shell reports it.</summary>
    public const int InterruptExitCode = 130;

    /// <summary>Exit code of a stop started by SIGTERM (scancel, Kubernetes eviction): 128 + 15.</summary>
    public const int TerminateExitCode = 143;

    readonly TaskCompletionSource<int> _requested = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes with the exit code of the first request; later ones change nothing.</summary>
    public Task<int> Requested => _requested.Task;

    public bool IsRequested => _requested.Task.IsCompleted;

    public int ExitCode => IsRequested ? _requested.Task.Result : 0;

    /// <returns>true for the first request</returns>
    public bool Request(int exitCode) => _requested.TrySetResult(exitCode);

    /// <summary>Where the run stopped (null: it did not stop early).</summary>
    public StopOutcome? Outcome { get; set; }

    public static bool IsStopExitCode(int code) => code is InterruptExitCode or TerminateExitCode;
}

/// <summary>The step the run stopped after and the committed checkpoint of that step (null: none was written).</summary>
public sealed record StopOutcome(int Step, string? Checkpoint);
