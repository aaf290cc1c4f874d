using System.Diagnostics;
using DistTrain.Protocol.V1;

namespace DistTrain.Coordinator;

/// <summary>
/// An elastic job's failures and the generations that followed (the protocol's <see cref="Recovery"/> records, oldest first),
/// and the clock of the recovery in progress. Not thread-safe: <see cref="JobState"/> calls it under its lock.
/// </summary>
sealed class RecoveryHistory
{
    const string RejoinCause = "rejoin: ";

    readonly List<Recovery> _all = [];
    readonly Stopwatch _clock = new();

    public IReadOnlyList<Recovery> All => _all;

    /// <summary>The newest recovery (null: none yet).</summary>
    public Recovery? Last => _all.Count == 0 ? null : _all[^1];

    /// <summary>Recoveries from failures (a late worker rejoining is not one).</summary>
    public int Restarts => _all.Count(r => !IsRejoin(r));

    /// <summary>Seconds since the newest recovery opened (or since a restarted coordinator carried it on).</summary>
    public double Seconds => _clock.Elapsed.TotalSeconds;

    /// <summary>The cause of a generation opened for late workers rejoining at a checkpoint (not a failure).</summary>
    public static string Rejoin(string who) => RejoinCause + who;

    public static bool IsRejoin(Recovery r) => r.Cause.StartsWith(RejoinCause, StringComparison.Ordinal);

    /// <summary>A new generation opens after <paramref name="cause"/>: the failed rank (-1: none named) and the furthest step any rank had finished.</summary>
    public Recovery Open(int generation, string cause, int rank, string host, int pid, int failedAtStep)
    {
        _clock.Restart();
        var recovery = new Recovery { Generation = generation, Cause = cause, Rank = rank, Host = host, Pid = pid, FailedAtStep = failedAtStep, RestoredStep = -1 };
        _all.Add(recovery);
        return recovery;
    }

    /// <summary>Every failure the job recovered from, for the reason it finally fails with.</summary>
    public string Summary(int maxRestarts) =>
        $"after {Restarts} recover{(Restarts == 1 ? "y" : "ies")} (elastic.max_restarts {maxRestarts}); earlier failures: " +
        string.Join("; ", _all.Select(r => $"generation {r.Generation} after {r.Cause}"));

    public List<PersistedRecovery> Persisted() => [.. _all.Select(r => new PersistedRecovery(r.Generation, r.Cause, r.Rank, r.Host, r.Pid, r.FailedAtStep,
        r.RestoredStep, r.WorldSize, r.SecondsToRestart, r.SecondsToFirstStep, r.RestoredFrom))];

    /// <summary>A restarted coordinator's history; <paramref name="recovering"/>: a recovery was in progress, its clock starts again.</summary>
    public void Restore(IEnumerable<PersistedRecovery> persisted, bool recovering)
    {
        _all.AddRange(persisted.Select(r => new Recovery
        {
            Generation = r.Generation, Cause = r.Cause, Rank = r.Rank, Host = r.Host, Pid = r.Pid, FailedAtStep = r.FailedAtStep,
            RestoredStep = r.RestoredStep, WorldSize = r.WorldSize, SecondsToRestart = r.SecondsToRestart, SecondsToFirstStep = r.SecondsToFirstStep,
            RestoredFrom = r.RestoredFrom ?? "",
        }));
        if (recovering) _clock.Restart();
    }
}
