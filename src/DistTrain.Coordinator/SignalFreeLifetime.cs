using Microsoft.Extensions.Hosting;

namespace DistTrain.Coordinator;

/// <summary>A host lifetime that leaves SIGINT and SIGTERM to the command (ConsoleLifetime would stop the server at once).</summary>
sealed class SignalFreeLifetime : IHostLifetime
{
    public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
