// TorchSharp's random generator is process-wide, and the tests share temporary folders' parent: one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
