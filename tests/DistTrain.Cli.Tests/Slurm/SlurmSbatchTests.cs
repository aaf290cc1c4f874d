using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace DistTrain.Cli.Tests.Slurm;

/// <summary>
/// The shipped cluster/slurm.sbatch, unmodified, on a real one-node Slurm (<see cref="OneNodeSlurm"/>): a 2-worker
/// CPU job of the tiny model configured only through its documented variables and arguments; scancel mid-run
/// ends in the graceful stop with a checkpoint, and a second submission resumes from it.
/// </summary>
public sealed partial class SlurmSbatchTests(OneNodeSlurm slurm, ITestOutputHelper log) : IClassFixture<OneNodeSlurm>
{
    // generous for a loaded 2-core machine (a job here: 20-60 s), and each case's sum stays under make test's
    // --blame-hang-timeout of 10 minutes (with apt-get installing Slurm in the first case), so a stuck job fails here with its output
    static readonly TimeSpan JobLimit = TimeSpan.FromMinutes(4);
    static readonly TimeSpan StartLimit = TimeSpan.FromMinutes(3);   // submission to the first logged step
    static readonly TimeSpan StopLimit = TimeSpan.FromSeconds(90);   // scancel to the job's end: the step, the save; KillWait is 60 s

    static string Script => Path.Combine(Disttrain.RepoRoot, "cluster", "slurm.sbatch");

    [GeneratedRegex(@"^stopped at step (\d+); checkpoint (\S+); resume with: .+ --resume \2$", RegexOptions.Multiline)]
    private static partial Regex LaunchStoppedLine();

    [SlurmFact]
    public void ATwoWorkerCpuJobRunsToItsLastStep()
    {
        log.WriteLine($"Slurm up in {slurm.StartTime.TotalSeconds:F1} s");
        var clock = Stopwatch.StartNew();
        var work = Directory.CreateDirectory(Path.Combine(slurm.Folder, "complete")).FullName;
        int job = slurm.Submit(work, CpuOptions(), Script, ["--set", $"train.run_dir={Path.Combine(work, "runs")}"], Variables(steps: 20));
        var (state, exit) = slurm.WaitForEnd(job, JobLimit);
        var output = Output(work, job);
        Assert.True((state, exit) == ("COMPLETED", "0:0"), $"job {job}: {state}, exit {exit}\n{output}\n{slurm.Diagnostics()}");
        Assert.Contains($"slurm.sbatch: 1 node(s) x 2 worker(s), ring, coordinator port {20000 + job % 10000}", output);
        Assert.Contains($"[coordinator] coordinator for job 'slurm-{job}' on 127.0.0.1:{20000 + job % 10000}: waiting for 2 workers", output);
        Assert.Contains("[rank 0] step     20 ", output);
        Assert.Contains($"[coordinator] job 'slurm-{job}' finished", output);
        var checkpoints = Directory.GetDirectories(Path.Combine(work, "runs"), "checkpoints", SearchOption.AllDirectories).Single();
        Assert.Equal(20, ManifestStep(Path.Combine(checkpoints, File.ReadAllText(Path.Combine(checkpoints, "latest")).Trim())));
        Assert.DoesNotContain("   at ", output);
        log.WriteLine($"job {job}: 20 steps in {clock.Elapsed.TotalSeconds:F1} s");
    }

    [SlurmFact]
    public void ScancelStopsTheJobWithACheckpointThatASecondSubmissionResumes()
    {
        log.WriteLine($"Slurm up in {slurm.StartTime.TotalSeconds:F1} s");
        var clock = Stopwatch.StartNew();
        var work = Directory.CreateDirectory(Path.Combine(slurm.Folder, "scancel")).FullName;
        string[] runDir = ["--set", $"train.run_dir={Path.Combine(work, "runs")}"];
        int job = slurm.Submit(work, CpuOptions(), Script, runDir, Variables(steps: 2000));
        WaitForOutput(work, job, "[rank 0] step      5 ");
        slurm.Cancel(job);   // plain scancel: SIGTERM to every process of the job, SIGKILL KillWait (60 s) later
        var (state, exit) = slurm.WaitForEnd(job, StopLimit);
        var output = Output(work, job);
        Assert.True(state == "CANCELLED", $"job {job}: {state}, exit {exit}\n{output}");
        var stopped = LaunchStoppedLine().Match(output);   // launch's own last line
        Assert.True(stopped.Success, $"no 'stopped at step' line from launch:\n{output}\n{slurm.Diagnostics()}");
        int step = int.Parse(stopped.Groups[1].Value);
        string checkpoint = stopped.Groups[2].Value;
        Assert.InRange(step, 5, 1999);
        Assert.StartsWith(Path.Combine(work, "runs"), checkpoint);
        Assert.Equal(step, ManifestStep(checkpoint));
        Assert.Contains($"[coordinator] job 'slurm-{job}' stopped at step {step}; checkpoint {checkpoint}", output);
        Assert.Contains($"[rank 1] stopped at step {step}; checkpoint {checkpoint}", output);
        Assert.Contains("task 0: Exited with exit code 143", output);   // srun: launch's graceful-stop code, not a kill
        Assert.DoesNotContain("again: exiting at once", output);        // one SIGTERM per process, none forwarded twice
        Assert.DoesNotContain("   at ", output);
        log.WriteLine($"job {job}: stopped at step {step} after {clock.Elapsed.TotalSeconds:F1} s");

        int resumed = slurm.Submit(work, CpuOptions(), Script, [.. runDir, "--resume", checkpoint], Variables(steps: step + 3));
        (state, exit) = slurm.WaitForEnd(resumed, JobLimit);
        output = Output(work, resumed);
        Assert.True((state, exit) == ("COMPLETED", "0:0"), $"job {resumed}: {state}, exit {exit}\n{output}\n{slurm.Diagnostics()}");
        Assert.Contains($"resuming from {checkpoint} at step {step}", output);
        Assert.Contains($"[coordinator] job 'slurm-{resumed}' finished", output);
        // the resumed run's last checkpoint (in its own run directory or the first one's)
        var last = Directory.GetDirectories(Path.Combine(work, "runs"), $"step-{step + 3:D8}", SearchOption.AllDirectories);
        Assert.True(last.Length == 1, $"{last.Length} checkpoints of step {step + 3}:\n{output}");
        Assert.Equal(step + 3, ManifestStep(last[0]));
        log.WriteLine($"job {resumed}: resumed to step {step + 3}; both cases {clock.Elapsed.TotalSeconds:F1} s");
    }

    [SlurmFact(WithoutGpus = true)]
    public void AGpuJobAsShippedGetsOneNcclWorkerPerAllocatedGpu()
    {
        // the GPU path with no variable set: sbatch --gpus-per-node=2, the default config (configs/405m-muddformer.yaml,
        // relative to the working directory); the node's two GPUs exist for Slurm only, so launch stops at its GPU check
        var work = Directory.CreateDirectory(Path.Combine(slurm.Folder, "gpu")).FullName;
        Directory.CreateSymbolicLink(Path.Combine(work, "configs"), Path.Combine(Disttrain.RepoRoot, "configs"));
        int job = slurm.Submit(work, ["--gpus-per-node=2"], Script, ["--set", "train.steps=1"], new Dictionary<string, string>
        {
            ["DISTTRAIN_BIN"] = Disttrain.Executable, ["TORCH_LIB"] = "none", ["DOTNET_ROOT"] = Disttrain.DotnetRoot, ["NO_COLOR"] = "1",
        });
        var (state, exit) = slurm.WaitForEnd(job, JobLimit);
        var output = Output(work, job);
        Assert.True((state, exit) == ("FAILED", "2:0"), $"job {job}: {state}, exit {exit}\n{output}\n{slurm.Diagnostics()}");
        Assert.Contains($"slurm.sbatch: 1 node(s) x 2 worker(s), nccl, coordinator port {20000 + job % 10000}", output);
        Assert.Contains("--config configs/405m-muddformer.yaml --set train.steps=1 --node-rank N", output);
        var manifest = Path.Combine(work, $"slurm-{job}.disttrain.yaml");
        Assert.Contains("backend: nccl", File.ReadAllText(manifest));
        Assert.Contains("  - {host: 127.0.0.1, gpus: [0, 1]}", File.ReadAllText(manifest));
        Assert.Contains($"error: {manifest}: nodes[0].gpus: [0, 1] listed, this host has 0 GPU(s)", output);
    }

    /// <summary>Two CPUs when the node has them: the sbatch hands the task all of the node's CPUs (srun --cpus-per-task).</summary>
    string[] CpuOptions() => [$"--cpus-per-task={Math.Min(2, slurm.Cpus)}"];

    /// <summary>The script's documented variables for a CPU job of the tiny model; extra --set options through DISTTRAIN_ARGS.</summary>
    static Dictionary<string, string> Variables(int steps) => new()
    {
        ["DISTTRAIN_BIN"] = Disttrain.Executable,
        ["DISTTRAIN_CONFIG"] = Path.Combine(Disttrain.RepoRoot, "configs", "tiny-transformerpp.yaml"),
        ["DISTTRAIN_WORKERS_PER_NODE"] = "2",
        ["DISTTRAIN_ARGS"] = $"--set train.steps={steps} --set train.log_interval=5 --set train.seq_len=32 --set train.micro_batch=2 --set train.eval_interval=0 --set train.eval_batches=1 --set optim.warmup_steps=2",
        ["TORCH_LIB"] = "none",   // the test build brings its own (CPU) libtorch
        ["DOTNET_ROOT"] = Disttrain.DotnetRoot,   // for the apphost, wherever this SDK lives
        ["NO_COLOR"] = "1",
    };

    void WaitForOutput(string work, int job, string marker)
    {
        var clock = Stopwatch.StartNew();
        while (!Output(work, job).Contains(marker))
        {
            var (state, exit) = slurm.State(job);
            if (state is not ("PENDING" or "CONFIGURING" or "RUNNING") || clock.Elapsed > StartLimit)
                Assert.Fail($"job {job} ({state}, exit {exit}): '{marker}' never appeared:\n{Output(work, job)}\n{slurm.Diagnostics()}");
            Thread.Sleep(250);
        }
    }

    static string Output(string work, int job)
    {
        var path = OneNodeSlurm.OutputOf(work, job);
        try { return File.Exists(path) ? File.ReadAllText(path) : ""; } catch (IOException) { return ""; }
    }

    static int ManifestStep(string checkpoint) =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(checkpoint, "manifest.json"))).RootElement.GetProperty("step").GetInt32();
}
