using System.Diagnostics;
using System.Text.RegularExpressions;
using DistTrain.Training.Stopping;

namespace DistTrain.Cli.Commands;

/// <summary>
/// A process `launch` started (the coordinator or a worker): its output forwarded with a prefix, and what
/// its output says about a failure — the coordinator's "job 'J' failed: REASON", a worker's "error: ..." line —
/// so that launch's own last line can name the cause.
/// </summary>
sealed partial class LaunchedChild(string name, Process process, string job, int slot, int incarnation)
{
    /// <summary>The worker's slot on its node; -1: the coordinator.</summary>
    public int Slot { get; } = slot;

    /// <summary>0: the slot's first process; n: its n-th restart (elastic jobs).</summary>
    public int Incarnation { get; } = incarnation;

    /// <summary>A restarted worker the job finished without: stopped by launch, not a failure.</summary>
    public bool Superfluous { get; set; }

    readonly string _jobFailed = $"job '{job}' failed: ";
    volatile string? _failure, _error;

    public string Name { get; } = name;
    public Process Process { get; } = process;

    /// <summary>When it exited (set by <see cref="WaitAsync"/>): the first to fail is the likeliest cause.</summary>
    public DateTime? ExitedAt { get; private set; }

    /// <summary>A graceful stop's exit code (130, 143) is no failure: the others are saving the same step.</summary>
    public bool Failed => Process.HasExited && Process.ExitCode != 0 && !StopRequest.IsStopExitCode(Process.ExitCode);

    /// <summary>Where its "stopped at step N; checkpoint PATH; ..." line says the run stopped; null without one.</summary>
    public StopOutcome? Stopped { get; private set; }

    /// <summary>Why it says the job failed: the coordinator's reason, else the child's last error line; null when it said neither.</summary>
    public string? Cause => _failure ?? _error;

    public static LaunchedChild Start(string name, ProcessStartInfo start, string job, int slot = -1, int incarnation = 0)
    {
        var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {name}");
        var child = new LaunchedChild(name, process, job, slot, incarnation);
        process.OutputDataReceived += (_, e) => child.Forward(e.Data, Console.Out);
        process.ErrorDataReceived += (_, e) => child.Forward(e.Data, Console.Error);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return child;
    }

    /// <summary>Completes when the process exited and its output was forwarded.</summary>
    public Task WaitAsync() => _exit ??= WaitForExitAsync();
    Task? _exit;

    async Task WaitForExitAsync()
    {
        await Process.WaitForExitAsync(CancellationToken.None);
        ExitedAt = DateTime.UtcNow;
    }

    void Forward(string? line, TextWriter to)
    {
        if (line is null) return;
        if (line.StartsWith(_jobFailed, StringComparison.Ordinal)) _failure = line[_jobFailed.Length..];
        else if (line.StartsWith("error: ", StringComparison.Ordinal)) _error = line["error: ".Length..];
        else if (StoppedLine().Match(line) is { Success: true } stopped) Stopped = new StopOutcome(int.Parse(stopped.Groups[1].Value), stopped.Groups[2].Value);
        to.WriteLine($"[{Name}] {line}");
    }

    [GeneratedRegex(@"^stopped at step (\d+); checkpoint (\S+);")]
    private static partial Regex StoppedLine();
}
