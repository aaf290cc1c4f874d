using System.Runtime.InteropServices;
using DistTrain.Training.Stopping;

namespace DistTrain.Cli.Terminal;

/// <summary>
/// SIGINT (Ctrl-C) and SIGTERM (scancel, Kubernetes eviction) as a graceful stop: the first asks
/// <see cref="StopRequest"/> to stop after the step in progress with a checkpoint (exit 130 for SIGINT, 143 for
/// SIGTERM); a second one exits at once with the same code, saving nothing more.
/// </summary>
sealed class StopSignals : IDisposable
{
    readonly PosixSignalRegistration[] _registrations;
    readonly string _what;
    readonly StopRequest _stop;
    readonly Action? _atOnce;
    int _count;

    /// <param name="what">what the first signal does, for the line it prints ("stopping after the current step ...")</param>
    /// <param name="atOnce">run before exiting on a second signal (launch: kill its children)</param>
    public StopSignals(StopRequest stop, string what, Action? atOnce = null)
    {
        (_what, _stop, _atOnce) = (what, stop, atOnce);
        _registrations = [PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle), PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle)];
        void Handle(PosixSignalContext context)
        {
            context.Cancel = true;   // no default termination: the run ends itself
            string name = context.Signal == PosixSignal.SIGINT ? "SIGINT" : "SIGTERM";
            int code = context.Signal == PosixSignal.SIGINT ? StopRequest.InterruptExitCode : StopRequest.TerminateExitCode;
            if (Interlocked.Increment(ref _count) == 1)
            {
                Console.Error.WriteLine($"{name}: {_what}; send it again to exit at once");
                _stop.Request(code);
                return;
            }
            Console.Error.WriteLine($"{name} again: exiting at once (exit code {_stop.ExitCode}); a checkpoint in progress is not committed, the last committed one stays usable");
            _atOnce?.Invoke();
            ImmediateExit.Now(_stop.IsRequested ? _stop.ExitCode : code);
        }
    }

    public StopRequest Stop => _stop;

    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
    }
}
