using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace DistTrain.Cli.Tests.Elastic;

/// <summary>Elastic jobs run four processes each on a 2-core machine: never beside another test class's processes.</summary>
[CollectionDefinition(nameof(ElasticJob), DisableParallelization = true)]
public sealed class ElasticCollection;

/// <summary>
/// An elastic job of 3 CPU workers on the tiny MUDDFormer (12 sequences per step from 6 shards, a checkpoint every 4 steps, a
/// ledger, a loss every step), started by `launch` or as separate processes, with each output line's arrival time kept so that
/// a test can time a recovery from the moment it killed a worker.
/// </summary>
sealed partial class ElasticJob : IDisposable
{
    public const int Steps = 20;
    public static readonly TimeSpan Limit = TimeSpan.FromMinutes(8);   // a loaded 2-core machine took over 4 minutes for plain 3-worker jobs

    readonly List<(DateTime At, string Line)> _lines = [];
    readonly List<Process> _processes = [];
    public string Dir { get; }
    public string Runs => Path.Combine(Dir, "runs");

    ElasticJob(string dir) => Dir = dir;

    /// <param name="overrides">more --set assignments (elastic.*)</param>
    public static string[] Args(string runs, params string[] overrides) =>
    [
        "--config", "configs/tiny-muddformer.yaml", "--set", $"train.steps={Steps}", "--set", "train.log_interval=1",
        "--set", "train.seq_len=64", "--set", "train.global_batch=12", "--set", "data.shards=6", "--set", "train.micro_batch=2",
        "--set", "train.eval_interval=0", "--set", "train.eval_batches=1", "--set", "optim.warmup_steps=2", "--set", $"train.run_dir={runs}",
        "--set", "train.ledger=true", "--set", "checkpoint.interval=4", .. overrides.SelectMany(o => new[] { "--set", o }),
    ];

    /// <summary>`disttrain launch` of the whole job on this host.</summary>
    public static ElasticJob Launch(string dir, double heartbeatTimeout = 30, params string[] elastic)
    {
        var job = new ElasticJob(dir);
        job.Start("launch", ["launch", "--manifest", Disttrain.LocalManifest(dir, 3, heartbeatTimeout), .. Args(job.Runs, elastic)]);
        return job;
    }

    /// <summary>The coordinator and the three workers as separate processes, as a scheduler starts them: nobody restarts a lost one.</summary>
    public static ElasticJob Separate(string dir, params string[] elastic)
    {
        var job = new ElasticJob(dir);
        var manifest = Disttrain.LocalManifest(dir, 3);
        job.Start("coordinator", ["coordinator", "--manifest", manifest, .. Args(job.Runs, elastic)]);
        for (int slot = 0; slot < 3; slot++) job.Start($"rank {slot}", ["worker", "--manifest", manifest, .. Args(job.Runs, elastic), "--local-slot", $"{slot}"]);
        return job;
    }

    void Start(string name, string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Disttrain.RepoRoot };
        start.ArgumentList.Add(Disttrain.Dll);
        foreach (var a in args) start.ArgumentList.Add(a);
        start.Environment["NO_COLOR"] = "1";
        var process = Process.Start(start)!;
        string prefix = name == "launch" ? "" : $"[{name}] ";
        void Add(string? line) { if (line is not null) lock (_lines) _lines.Add((DateTime.UtcNow, prefix + line)); }
        process.OutputDataReceived += (_, e) => Add(e.Data);
        process.ErrorDataReceived += (_, e) => Add(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _processes.Add(process);
    }

    public string Output { get { lock (_lines) return string.Join('\n', _lines.Select(l => l.Line)); } }

    /// <summary>Waits until rank 0 logged step <paramref name="step"/> of generation 0 (or later).</summary>
    public void WaitForStep(int step)
    {
        var deadline = DateTime.UtcNow + Limit;
        while (DateTime.UtcNow < deadline && !_processes[0].HasExited)
        {
            if (LoggedSteps().Any(s => s >= step)) return;
            Thread.Sleep(50);
        }
        throw new TimeoutException($"step {step} not reached\n{Output}");
    }

    IEnumerable<int> LoggedSteps()
    {
        lock (_lines) return _lines.Select(l => StepLine().Match(l.Line)).Where(m => m.Success).Select(m => int.Parse(m.Groups[1].Value)).ToList();
    }

    /// <summary>The worker process of node 0's slot <paramref name="slot"/> (the newest, after restarts).</summary>
    public Process Worker(int slot) => LaunchTests.FindProcess(Dir, "--local-slot", $"{slot}") ?? throw new InvalidOperationException($"worker of slot {slot} not found\n{Output}");

    /// <summary>The job's coordinator process (the newest, after restarts).</summary>
    public Process Coordinator()
    {
        foreach (var proc in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(proc), out int pid)) continue;
            string[] args;
            try { args = File.ReadAllText(Path.Combine(proc, "cmdline")).Split('\0'); } catch (IOException) { continue; } catch (UnauthorizedAccessException) { continue; }
            if (args.Contains("coordinator") && args.Any(a => a.Contains(Dir))) return Process.GetProcessById(pid);
        }
        throw new InvalidOperationException($"coordinator not found\n{Output}");
    }

    /// <summary>Waits for every process; their exit codes (the first is launch's or the coordinator's).</summary>
    public int[] WaitForExit()
    {
        var deadline = DateTime.UtcNow + Limit;
        foreach (var p in _processes)
            if (!p.WaitForExit(deadline - DateTime.UtcNow > TimeSpan.Zero ? deadline - DateTime.UtcNow : TimeSpan.Zero))
                throw new TimeoutException($"the job did not end within {Limit}\n{Output}");
        foreach (var p in _processes) p.WaitForExit();
        return _processes.Select(p => p.ExitCode).ToArray();
    }

    /// <summary>Seconds from <paramref name="killed"/> to the first step line logged after generation <paramref name="generation"/> started.</summary>
    public double SecondsToFirstStep(DateTime killed, int generation)
    {
        lock (_lines)
        {
            int started = _lines.FindIndex(l => l.Line.Contains($"generation {generation} starts with"));
            if (started < 0) throw new InvalidOperationException($"generation {generation} never started\n{Output}");
            var first = _lines.Skip(started).First(l => StepLine().IsMatch(l.Line));
            return (first.At - killed).TotalSeconds;
        }
    }

    /// <summary>What the coordinator says each recovery cost: "N steps trained again".</summary>
    public int StepsLost(int generation) =>
        int.Parse(Regex.Match(Output, $@"recovered: generation {generation} finished step \d+, [\d.]+ s after the failure; (\d+) steps trained again").Groups[1].Value, CultureInfo.InvariantCulture);

    public string RunDir => Directory.GetDirectories(Runs).Single();

    /// <summary>metrics.jsonl's loss of every step, in order (a recovery supersedes the lines it trains again).</summary>
    public static double[] Losses(string runDir) =>
        File.ReadLines(Path.Combine(runDir, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("loss").GetDouble()).ToArray();

    /// <summary>
    /// The windows each step trained, by the ledger of every rank and generation: a step's windows are those of the newest
    /// generation that trained it (an older generation's lines past the step a newer one restored were rolled back).
    /// </summary>
    public static SortedDictionary<int, List<(int Shard, int Epoch, long Index)>> Trained(string runDir)
    {
        var lines = new List<(int Step, int Generation, List<(int, int, long)> Windows)>();
        foreach (var file in Directory.GetFiles(runDir, "ledger-rank*.jsonl"))
            foreach (var line in File.ReadLines(file))
            {
                var root = JsonDocument.Parse(line).RootElement;
                lines.Add((root.GetProperty("step").GetInt32(), root.GetProperty("generation").GetInt32(),
                    root.GetProperty("windows").EnumerateArray().Select(w => (w[0].GetInt32(), w[1].GetInt32(), w[2].GetInt64())).ToList()));
            }
        var trained = new SortedDictionary<int, List<(int, int, long)>>();
        foreach (var group in lines.GroupBy(l => l.Step))
        {
            int newest = group.Max(l => l.Generation);
            trained[group.Key] = group.Where(l => l.Generation == newest).SelectMany(l => l.Windows).Order().ToList();
        }
        return trained;
    }

    public void Dispose()
    {
        foreach (var p in _processes)
        {
            try { if (!p.HasExited) p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            p.Dispose();
        }
    }

    // only the job's rank 0 logs steps; launch names a process by its slot's first rank, so a later rank 0 may carry another
    [GeneratedRegex(@"^\[rank \d+\] step\s+(\d+)\s+loss")]
    private static partial Regex StepLine();
}
