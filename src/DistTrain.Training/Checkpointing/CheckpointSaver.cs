using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using DistTrain.Checkpoint;
using DistTrain.Data;
using DistTrain.Model;
using DistTrain.Training.Config;
using DistTrain.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training.Checkpointing;

/// <summary>
/// What one save did: this rank's bytes; how long training waited (StallSeconds = WaitSeconds for
/// the previous save still writing + the device-to-host copy); how long the background write took;
/// the error if it failed.
/// </summary>
public sealed record CheckpointReport(int Step, string Dir, long Bytes, double StallSeconds, double WriteSeconds, string? Error, double WaitSeconds = 0)
{
    public double CopySeconds => StallSeconds - WaitSeconds;
    public double MegabytesPerSecond => WriteSeconds > 0 ? Bytes / 1e6 / WriteSeconds : 0;
}

/// <summary>
/// Asynchronous sharded saves. <see cref="Begin"/> waits for the previous save, copies this rank's
/// slice of the fp32 master weights and both AdamW moments into host buffers (the only time
/// training waits), and returns; a background task writes shard-RRRRR-of-WWWWW.safetensors and the
/// rank's data cursors into the save's temporary folder, fsyncs and checksums them, and votes
/// through <see cref="ICheckpointCommit"/>. When every rank voted to commit, rank 0 writes
/// manifest.json, renames the folder into place, moves "latest" and keeps the last K.
/// The background task touches no TorchSharp object: it writes from the host buffers' memory, which
/// only <see cref="Begin"/> fills, and only after the previous write finished.
/// </summary>
public sealed class CheckpointSaver : IDisposable
{
    static readonly string[] Buffers = ["master", "exp_avg", "exp_avg_sq"];   // the names of the flat buffers in a shard file

    readonly CheckpointOptions _options;
    readonly int _rank, _world;
    readonly ICheckpointCommit _commit;
    readonly SaveOwner _owner;
    readonly Tensor[] _host = new Tensor[Buffers.Length];   // this rank's slices in host memory (pinned for a GPU), reused by every save
    readonly HostTensor[] _hostBytes;                        // the same memory as the background write sees it: no TorchSharp object
    readonly string _configYaml, _modelConfigJson, _layoutJson;
    readonly string? _runDirectory;   // the run's folder: a resume from these checkpoints continues it
    readonly string? _tokenizer;   // what `generate` decodes with (RunTokenizer); null when no dataset.json names it
    readonly long _flatCount;
    Task<CheckpointReport>? _pending;

    /// <param name="owner">the job and the run id, shared by every rank: name the temporary folder of each save</param>
    /// <param name="runDirectory">the run's folder (absolute), recorded in every manifest so that a resume continues it; null: none recorded</param>
    public CheckpointSaver(CheckpointOptions options, TrainConfig config, int rank, int world, ICheckpointCommit commit, SaveOwner owner, FlatParameters flat,
        string? runDirectory = null)
    {
        (_options, _rank, _world, _commit, _owner, _runDirectory) = (options, rank, world, commit, owner, runDirectory);
        // allocated once, up front: pinning gigabytes takes seconds, which would otherwise stall the first save
        var (_, count) = TrainingCheckpoint.Slice(flat.Count, rank, world);
        for (int i = 0; i < _host.Length; i++) _host[i] = HostBuffer(count, flat.Master.device);
        _hostBytes = Buffers.Select((name, i) => new HostTensor(name, "F32", [count], TensorMemory.Address(_host[i]))).ToArray();
        // what every manifest repeats, computed here: the background write touches only strings and the host buffers above
        (_configYaml, _modelConfigJson) = (ResolvedConfig.Yaml(config), HfExport.ConfigJson(config.Model, ScalarType.Float32).ToJsonString());
        (_layoutJson, _flatCount) = (TrainingCheckpoint.LayoutJson(flat), flat.Count);
        _tokenizer = RunTokenizer.NameFor(config.Data);
        WritableFolder.Ensure(Path.GetFullPath(options.Dir), "checkpoint.dir", config, rank);   // a full disk shows now, not at the first save
    }

    /// <summary>
    /// Starts the save of <paramref name="step"/>: waits for the previous one (returned, for reporting),
    /// then copies this rank's slices to the host and hands the writing to a background task.
    /// </summary>
    public CheckpointReport? Begin(FlatParameters flat, FlatAdamW optimizer, DataParallelPlan plan, int step, long tokens,
        IReadOnlyDictionary<int, DataCursor> cursors, CancellationToken ct)
    {
        var started = Stopwatch.GetTimestamp();
        var previous = Wait();
        double wait = Stopwatch.GetElapsedTime(started).TotalSeconds;
        var (start, count) = TrainingCheckpoint.Slice(flat.Count, _rank, _world);
        var sources = new[] { flat.Master, optimizer.ExpAvg, optimizer.ExpAvgSq };
        // Begin runs between steps, outside the step's dispose scope; this scope keeps each narrow view reachable while copy_ reads it.
        // Without it the view is garbage once copy_ has its handle, and a GC started by another thread (the save's writer, the data
        // reader) let its finalizer free the view mid-copy: SIGSEGV in libtorch's copy_ (SaveWhileTrainingTests, 5 of 12 runs).
        using (no_grad())
        using (NewDisposeScope())
            for (int i = 0; i < Buffers.Length; i++)
                _host[i].copy_(sources[i].narrow(0, start, count));   // device-to-host: the stall
        var counters = optimizer.Counters;
        var cursorJson = JsonSerializer.Serialize(cursors.ToDictionary(c => c.Key.ToString(), c => c.Value.ToJson()));
        double stall = Stopwatch.GetElapsedTime(started).TotalSeconds;
        var job = new SaveJob(step, tokens, start, count, cursorJson, counters, plan.Shards, stall, wait);
        _pending = Task.Run(() => WriteAndCommitAsync(job, ct), CancellationToken.None);
        return previous;
    }

    /// <summary>The finished save, if the background task is done (never blocks); null otherwise.</summary>
    public CheckpointReport? Poll() => _pending is { IsCompleted: true } ? Wait() : null;

    /// <summary>Waits for the save in flight and returns its report (null when none).</summary>
    public CheckpointReport? Wait()
    {
        if (_pending is not { } pending) return null;
        _pending = null;
        return pending.GetAwaiter().GetResult();
    }

    /// <summary>Everything the background write needs besides the host buffers: plain values, no tensors.</summary>
    sealed record SaveJob(int Step, long Tokens, long Start, long Count, string CursorJson, (double Steps, long FirstNonFinite) Counters,
        int Shards, double Stall, double Wait);

    async Task<CheckpointReport> WriteAndCommitAsync(SaveJob job, CancellationToken ct)
    {
        var started = Stopwatch.GetTimestamp();
        string final = Path.Combine(_options.Dir, CheckpointDirectory.StepName(job.Step));
        string temp = final;
        long bytes = 0;
        string? error = null;
        var files = new List<ManifestFile>();
        try
        {
            temp = CheckpointDirectory.TempFor(_options.Dir, job.Step, _owner);
            string shard = TrainingCheckpoint.ShardName(_rank, _world), cursors = $"cursors-{_rank:D5}.json";
            CheckpointFaults.At("io-error", job.Step, _rank);
            CheckpointFaults.At("bug", job.Step, _rank);
            Safetensors.Write(Path.Combine(temp, shard), _hostBytes,
                new Dictionary<string, string> { ["flat_start"] = $"{job.Start}", ["flat_count"] = $"{job.Count}" });
            File.WriteAllText(Path.Combine(temp, cursors), job.CursorJson);
            foreach (var name in new[] { shard, cursors })
            {
                CheckpointDirectory.FsyncFile(Path.Combine(temp, name));
                files.Add(ManifestFile.Of(temp, name));   // each rank checksums its own files, in parallel
            }
            bytes = files.Sum(f => f.Bytes);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or CheckpointException)
        {
            error = $"{temp}: {e.Message}";
        }
        CheckpointFaults.At("after-shards", job.Step, _rank);
        var decision = await _commit.VoteAsync(new CheckpointVote(job.Step, _rank, files, error), ct);
        if (_rank != 0 || !decision.Commit)
        {
            if (_rank == 0) await GiveUpAsync(job.Step, temp, decision.Reason, ct);
            return new CheckpointReport(job.Step, decision.Commit ? final : temp, bytes, job.Stall, Seconds(started), decision.Commit ? null : decision.Reason, job.Wait);
        }
        try
        {
            WriteManifest(job, temp, decision.Files);
            CheckpointFaults.At("after-manifest", job.Step, _rank);
            // a complete checkpoint of this step that "latest" does not name (saved, then the run went back
            // to an older one) is moved aside whole, never overwritten in place; KeepLast removes it
            if (Directory.Exists(final))
                Directory.Move(final, CheckpointDirectory.SupersededFor(_options.Dir, job.Step, _owner));
            CheckpointDirectory.Commit(temp, final);
            CheckpointFaults.At("after-rename", job.Step, _rank);
            CheckpointDirectory.PointLatest(_options.Dir, Path.GetFileName(final));
            CheckpointDirectory.KeepLast(_options.Dir, _options.Keep, _owner, upToStep: job.Step);   // and this job's interrupted saves
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or CheckpointException)
        {
            string reason = $"rank 0: committing {temp}: {e.Message}";
            await GiveUpAsync(job.Step, temp, reason, ct);
            return new CheckpointReport(job.Step, temp, bytes, job.Stall, Seconds(started), reason, job.Wait);
        }
        await _commit.CompletedAsync(job.Step, final, null, ct);
        return new CheckpointReport(job.Step, final, bytes, job.Stall, Seconds(started), null, job.Wait);
    }

    /// <summary>Rank 0 after an aborted save: removes its temporary folder (best effort) and tells the coordinator.</summary>
    async Task GiveUpAsync(int step, string temp, string reason, CancellationToken ct)
    {
        try { if (Directory.Exists(temp) && Path.GetFileName(temp).StartsWith(".tmp-")) Directory.Delete(temp, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }   // a leftover .tmp-* folder is ignored on load and removed by this job's next commit
        await _commit.CompletedAsync(step, null, reason, ct);
    }

    void WriteManifest(SaveJob job, string temp, IReadOnlyList<ManifestFile> files)
    {
        var allCursors = new Dictionary<string, string>();
        for (int r = 0; r < _world; r++)
            foreach (var (shard, cursor) in JsonSerializer.Deserialize<Dictionary<string, string>>(File.ReadAllText(Path.Combine(temp, $"cursors-{r:D5}.json")))!)
                allCursors[shard] = cursor;
        var sorted = files.OrderBy(f => f.Name, StringComparer.Ordinal).ToList();
        var manifest = new CheckpointManifest
        {
            Step = job.Step, Tokens = job.Tokens, WorldSize = _world,
            Config = _configYaml, ModelConfig = JsonNode.Parse(_modelConfigJson)!.AsObject(),
            DataCursors = JsonSerializer.Serialize(new { shards = job.Shards, cursors = allCursors }),
            Scalars = new() { ["adam_steps"] = job.Counters.Steps, ["first_non_finite"] = job.Counters.FirstNonFinite, ["flat_count"] = _flatCount },
            Extra = Extra(),
            Files = sorted,
            Tensors = sorted.Where(f => f.Name.EndsWith(".safetensors")).SelectMany(f => ManifestTensor.Of(f.Name, Safetensors.Open(Path.Combine(temp, f.Name)))).ToList(),
        };
        manifest.Write(temp);
    }

    Dictionary<string, string> Extra()
    {
        var extra = new Dictionary<string, string> { ["layout"] = _layoutJson };
        if (_tokenizer is not null) extra[RunTokenizer.ManifestKey] = _tokenizer;
        if (_runDirectory is not null) extra[TrainingCheckpoint.RunDirectoryKey] = _runDirectory;
        return extra;
    }

    /// <summary>fp32 host memory for <paramref name="count"/> values, pinned when the data comes from a GPU (also the in-memory snapshots' buffers).</summary>
    internal static Tensor HostBuffer(long count, Device device)
    {
        var host = empty(count, ScalarType.Float32, CPU);
        if (device.type != DeviceType.CUDA) return host.DetachFromDisposeScope();
        using (host) return host.pin_memory().DetachFromDisposeScope();   // pinned: the device-to-host copy runs at full PCIe speed
    }

    static double Seconds(long started) => Stopwatch.GetElapsedTime(started).TotalSeconds;

    public void Dispose()
    {
        // the background write reads the host buffers: let it finish (or fail) before freeing them
        try { _pending?.Wait(TimeSpan.FromMinutes(2)); } catch (AggregateException) { }
        if (_pending is { IsCompleted: false }) return;   // still writing (a hung file system): leak the buffers rather than free them under it
        foreach (var t in _host) t?.Dispose();
    }
}
