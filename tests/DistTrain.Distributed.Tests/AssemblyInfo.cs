// The ring tests run W ranks as threads over loopback and measure failure latencies: one test at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
