// TorchSharp's random generator and thread pool are process-wide: tests that seed and train run one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
