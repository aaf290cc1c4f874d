namespace DistTrain.Training.Stopping;

/// <summary>
/// Where the training loop stops: asked by <see cref="Trainer"/> at every step boundary. Alone, a stop ends the
/// step in progress (<see cref="StopAfterCurrentStep"/>). In a job the ranks must stop after the same step, so the
/// coordinator asks every rank for its finished steps (<see cref="Acknowledge"/>: from then on the rank finishes at
/// most one more step until it is told where to stop), takes the largest + 1 and tells every rank
/// (<see cref="StopAt"/>). Ranks are at most one step apart (every step all-reduces), so no rank is past that step.
/// </summary>
public sealed class StopGate
{
    readonly object _lock = new();
    int _finished, _acknowledged = -1, _limit = int.MaxValue, _stopAt = int.MaxValue;

    /// <summary>The loop starts with <paramref name="finished"/> steps done (a resumed run: the checkpoint's step).</summary>
    public void Begin(int finished) { lock (_lock) _finished = finished; }

    /// <summary>One process: stop after the step in progress.</summary>
    public void StopAfterCurrentStep()
    {
        lock (_lock)
        {
            _stopAt = Math.Min(_stopAt, _finished + 1);
            Monitor.PulseAll(_lock);
        }
    }

    /// <summary>A job's rank: the steps it had finished when first asked (the same answer every time it is asked).</summary>
    public int Acknowledge()
    {
        lock (_lock)
        {
            if (_acknowledged < 0) (_acknowledged, _limit) = (_finished, _finished + 1);
            return _acknowledged;
        }
    }

    /// <summary>A job's rank: the step every rank stops after (decided by the coordinator).</summary>
    public void StopAt(int step)
    {
        lock (_lock)
        {
            _stopAt = step;
            Monitor.PulseAll(_lock);
        }
    }

    /// <summary>
    /// Called after each step with the steps finished so far: true when the run stops here. While the ranks agree
    /// on the step, a rank that reached its limit waits here (cancelled when the job fails).
    /// </summary>
    public bool StopAfter(int finished, CancellationToken ct)
    {
        lock (_lock)
        {
            _finished = finished;
            while (finished >= _limit && _stopAt == int.MaxValue)
            {
                ct.ThrowIfCancellationRequested();
                Monitor.Wait(_lock, TimeSpan.FromMilliseconds(100));
            }
            return finished >= _stopAt;
        }
    }
}
