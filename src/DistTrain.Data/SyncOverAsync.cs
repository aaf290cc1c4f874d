namespace DistTrain.Data;

/// <summary>
/// Blocks on Parquet.Net's async-only API. Parquet.Net awaits without ConfigureAwait(false), so under a
/// synchronization context (UI, some test runners) the work moves to the pool first; elsewhere (the reader's own
/// thread, console apps) it runs in place.
/// </summary>
static class SyncOverAsync
{
    static bool InPlace => SynchronizationContext.Current is null && TaskScheduler.Current == TaskScheduler.Default;

    public static T Get<T>(Func<Task<T>> work) =>
        InPlace ? work().GetAwaiter().GetResult() : Task.Run(work).GetAwaiter().GetResult();

    public static void Wait(Func<ValueTask> work)
    {
        if (InPlace) work().AsTask().GetAwaiter().GetResult();
        else Task.Run(() => work().AsTask()).GetAwaiter().GetResult();
    }
}
