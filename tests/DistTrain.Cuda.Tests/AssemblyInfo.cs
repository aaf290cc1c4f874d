// the library-lookup tests set and clear process-wide environment variables
[assembly: CollectionBehavior(DisableTestParallelization = true)]
