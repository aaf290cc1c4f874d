using DistTrain.Checkpoint;
using System.Globalization;
using System.Text.Json;
using DistTrain.Training.Config;

namespace DistTrain.Training;

/// <summary>
/// A run's folder: runs/NAME-yyyyMMdd-HHmmss/ with config.yaml (the fully resolved config: <see cref="ResolvedConfig"/>) and
/// metrics.jsonl (one JSON object per logged step), and the same steps as TensorBoard scalars in
/// tensorboard/. A new folder per run; a resumed run continues its own folder (<see cref="Continue"/>); nothing is overwritten.
/// </summary>
public sealed class RunDirectory : IDisposable
{
    readonly StreamWriter? _metrics, _ledger;
    readonly int _generation;
    readonly TensorBoardLog? _tensorboard;

    RunDirectory(string path, int rank, bool ledger, int generation = 0)
    {
        Path = path;
        _generation = generation;
        // rank 0 writes the job's metrics; every rank writes its own ledger
        if (rank == 0)
        {
            _metrics = new StreamWriter(System.IO.Path.Combine(path, MetricsFileName), append: true) { AutoFlush = true };
            _tensorboard = new TensorBoardLog(System.IO.Path.Combine(path, "tensorboard"));
        }
        if (ledger) _ledger = new StreamWriter(System.IO.Path.Combine(path, LedgerFileName(rank)), append: true) { AutoFlush = true };
    }

    public const string MetricsFileName = "metrics.jsonl";

    static string LedgerFileName(int rank) => $"ledger-rank{rank}.jsonl";

    public string Path { get; }

    /// <param name="runId">the folder name all ranks of a job share (from the coordinator); null: NAME-TIMESTAMP, made unique</param>
    /// <param name="generation">an elastic job's generation, on each ledger line (a later one creates the folder when no rank of an earlier one got to)</param>
    public static RunDirectory Create(TrainConfig config, string? runId, int rank, int generation = 0)
    {
        var root = System.IO.Path.GetFullPath(config.Train.RunDir);
        string path;
        if (runId is not null)
            path = System.IO.Path.Combine(root, runId);
        else
        {
            var stamp = DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);
            path = System.IO.Path.Combine(root, $"{config.Train.Name}-{stamp}");
            for (int n = 2; Directory.Exists(path); n++)
                path = System.IO.Path.Combine(root, $"{config.Train.Name}-{stamp}-{n}");
        }
        try
        {
            Directory.CreateDirectory(path);
            // rank 0's config.yaml is the first write: a full disk or a folder that cannot be written stops the run here
            if (rank == 0)
                WriteConfig(path, config);
            return new RunDirectory(path, rank, config.Train.Ledger, generation);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw WritableFolder.Unwritable(path, "train.run_dir", config, e);
        }
    }

    static void WriteConfig(string path, TrainConfig config) =>
        File.WriteAllText(System.IO.Path.Combine(path, "config.yaml"), $"# resolved from {System.IO.Path.GetFullPath(config.Source)}\n" + ResolvedConfig.Yaml(config));

    /// <summary>The job's run directory <paramref name="runId"/> under train.run_dir when it exists (an elastic job's later generation); null otherwise.</summary>
    public static string? Existing(TrainConfig config, string runId)
    {
        var path = System.IO.Path.Combine(System.IO.Path.GetFullPath(config.Train.RunDir), runId);
        return Directory.Exists(path) ? path : null;
    }

    /// <summary>The run directory a resume continues: the one that wrote the checkpoint, when it is still there and directly under this run's train.run_dir (null: open a new one).</summary>
    public static string? Continued(TrainConfig config, string? writtenFrom) =>
        writtenFrom is not null && Directory.Exists(writtenFrom)
        && System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(writtenFrom).TrimEnd('/')) == System.IO.Path.GetFullPath(config.Train.RunDir).TrimEnd('/')
            ? System.IO.Path.GetFullPath(writtenFrom) : null;

    /// <summary>
    /// The name of the run directory a resume (checkpoint.resume) will continue, read from the checkpoint's manifest without
    /// verifying it (the ranks do that and report what is wrong); null when there is no resume or it opens a new directory.
    /// </summary>
    public static string? ResumedRunName(TrainConfig config)
    {
        var c = config.Checkpoint;
        if (c.Resume.Length == 0) return null;
        try
        {
            var root = c.Dir.Length > 0 ? c.Dir : LatestCheckpoints(config);
            var checkpoint = c.Resume != "latest" ? System.IO.Path.GetFullPath(c.Resume) : root is null ? null : CheckpointDirectory.ResolveLatest(root);
            if (checkpoint is null) return null;
            var written = CheckpointManifest.Read(checkpoint).Extra.GetValueOrDefault(Checkpointing.TrainingCheckpoint.RunDirectoryKey);
            return Continued(config, written) is { } run ? System.IO.Path.GetFileName(run) : null;
        }
        catch (Exception e) when (e is CheckpointException or IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>Where a resume at step S keeps what it replaced: the run's config.yaml of before, and logged lines past step S.</summary>
    public static string ResumeFolder(string runDirectory, int step) => System.IO.Path.Combine(runDirectory, "resumes", $"step-{step:D8}");

    /// <summary>
    /// A resumed run continues its own folder: metrics.jsonl (and each ledger) keeps its lines up to the resumed step and goes on
    /// after them, one curve. Lines past that step (logged after the checkpoint, before the run died) are superseded: they move to
    /// resumes/step-S/ (<see cref="ResumeFolder"/>), as does the config.yaml the run had; config.yaml is then this run's.
    /// Rank 0 does the metrics, the config and the ledgers of ranks the job no longer has; every rank its own ledger.
    /// </summary>
    /// <returns>the folder and the number of metrics lines superseded</returns>
    /// <param name="generation">an elastic job's generation: after the first, the ledgers are not cut (the steps trained again
    /// after a recovery are told apart by the generation on each line)</param>
    public static (RunDirectory Run, int Superseded) Continue(TrainConfig config, string path, int step, int rank, int world, int generation = 0)
    {
        var kept = ResumeFolder(path, step);
        try
        {
            int superseded = 0;
            if (rank == 0)
            {
                superseded = Supersede(System.IO.Path.Combine(path, MetricsFileName), kept, step);
                if (generation == 0)
                    foreach (var ledger in Directory.EnumerateFiles(path, "ledger-rank*.jsonl"))
                        if (int.TryParse(System.IO.Path.GetFileName(ledger)["ledger-rank".Length..^".jsonl".Length], out var r) && r >= world)
                            Supersede(ledger, kept, step);
                var old = System.IO.Path.Combine(path, "config.yaml");
                if (File.Exists(old))
                {
                    Directory.CreateDirectory(kept);
                    var target = System.IO.Path.Combine(kept, "config.yaml");
                    for (int n = 2; File.Exists(target); n++) target = System.IO.Path.Combine(kept, $"config-{n}.yaml");
                    File.Move(old, target);
                }
                WriteConfig(path, config);
            }
            if (generation == 0) Supersede(System.IO.Path.Combine(path, LedgerFileName(rank)), kept, step);
            return (new RunDirectory(path, rank, config.Train.Ledger, generation), superseded);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw WritableFolder.Unwritable(path, "train.run_dir", config, e);
        }
    }

    /// <summary>
    /// Keeps the lines of a JSONL log whose "step" is at most <paramref name="step"/>; appends the others (and any line that is
    /// not a step's, such as half a line from a crash) to the same file name in <paramref name="kept"/>. The tail is written
    /// first, then the shortened file replaces the old one by a rename: a crash in between loses nothing.
    /// </summary>
    static int Supersede(string file, string kept, int step)
    {
        if (!File.Exists(file)) return 0;
        var lines = File.ReadAllLines(file);
        bool Keep(string line)
        {
            try
            {
                using var json = JsonDocument.Parse(line);
                return json.RootElement.GetProperty("step").GetInt32() <= step;
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException) { return false; }
        }
        var tail = lines.Where(l => l.Length > 0 && !Keep(l)).ToList();
        if (tail.Count == 0) return 0;
        Directory.CreateDirectory(kept);
        File.AppendAllLines(System.IO.Path.Combine(kept, System.IO.Path.GetFileName(file)), tail);
        var shorter = file + ".resume-tmp";
        File.WriteAllLines(shorter, lines.Where(l => l.Length > 0 && Keep(l)));
        File.Move(shorter, file, overwrite: true);
        return tail.Count;
    }

    /// <summary>Where a run keeps its checkpoints unless checkpoint.dir says otherwise.</summary>
    public static string CheckpointsOf(string runDirectory) => System.IO.Path.Combine(runDirectory, "checkpoints");

    /// <summary>
    /// Where "latest" is without checkpoint.dir: the checkpoints/ of the newest run of the same train.name under
    /// train.run_dir that has a latest (null: none).
    /// </summary>
    public static string? LatestCheckpoints(TrainConfig config)
    {
        var root = new DirectoryInfo(System.IO.Path.GetFullPath(config.Train.RunDir));
        if (!root.Exists) return null;
        return root.EnumerateDirectories($"{config.Train.Name}-*")
            .Select(d => new FileInfo(System.IO.Path.Combine(CheckpointsOf(d.FullName), "latest")))
            .Where(f => f.Exists)
            .OrderByDescending(f => f.LastWriteTimeUtc)
            .Select(f => f.DirectoryName!)
            .FirstOrDefault();
    }

    public void Append(StepReport report)
    {
        try
        {
            _metrics?.WriteLine(JsonSerializer.Serialize(report, StepReport.Json));
            _tensorboard?.Append(report);
        }
        catch (IOException e) { throw Failed(e); }
    }

    /// <summary>A write to the run's folder failed mid-run (a full disk, most often): the path, the reason, what to do.</summary>
    TrainingException Failed(IOException e) =>
        new($"{Path}: cannot write the run's logs ({e.Message}); free space on that disk (`df -h {Path}`) and resume from the last checkpoint (--resume latest)");

    /// <summary>A run's metrics.jsonl read back, one report per line; a missing folder or file, or a line that is not a report, is an error naming the file and line.</summary>
    public static IReadOnlyList<StepReport> ReadMetrics(string runDirectory)
    {
        if (!Directory.Exists(runDirectory))
            throw new DirectoryNotFoundException($"{runDirectory}: no such folder; pass run directories that `disttrain train` wrote (runs/NAME-TIMESTAMP)");
        var path = System.IO.Path.Combine(runDirectory, MetricsFileName);
        if (!File.Exists(path))
            throw new FileNotFoundException($"{path}: not found; is {runDirectory} a run directory? `disttrain train` writes metrics.jsonl there from the first logged step (train.log_interval)", path);
        var reports = new List<StepReport>();
        int number = 0;
        foreach (var line in File.ReadLines(path))
        {
            number++;
            if (line.Length == 0) continue;
            try { reports.Add(JsonSerializer.Deserialize<StepReport>(line, StepReport.Json) ?? throw new JsonException("null is not a step report")); }
            catch (JsonException e)
            {
                throw new InvalidDataException($"{path}:{number}: not a step report ({e.Message}); fix or delete that line", e);
            }
        }
        if (reports.Count == 0)
            throw new InvalidDataException($"{path}: no logged steps yet; metrics.jsonl gets its first line after train.log_interval steps");
        return reports;
    }

    /// <summary>One ledger line: {"step": S, "generation": G, "windows": [[shard, epoch, index], ...]} (G: the elastic generation that trained it).</summary>
    public void AppendLedger(int step, IEnumerable<(int Shard, int Epoch, long Index)> windows)
    {
        try { _ledger?.WriteLine($"{{\"step\":{step},\"generation\":{_generation},\"windows\":[{string.Join(",", windows.Select(w => $"[{w.Shard},{w.Epoch},{w.Index}]"))}]}}"); }
        catch (IOException e) { throw Failed(e); }
    }

    public void Dispose()
    {
        _metrics?.Dispose();
        _ledger?.Dispose();
    }
}
