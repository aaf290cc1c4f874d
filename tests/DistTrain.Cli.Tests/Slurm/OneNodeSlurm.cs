using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;

namespace DistTrain.Cli.Tests.Slurm;

/// <summary>
/// A real one-node Slurm for the tests of cluster/slurm.sbatch: munged, slurmctld -D and slurmd -D as
/// child processes, with their configuration, key, state and logs in a temporary folder (nothing in /etc
/// is read or changed). Installs Debian's slurm-wlm and munge when they are missing (root, apt-get).
/// Dispose cancels the jobs it submitted and kills the daemons, also after a failure.
/// </summary>
public sealed partial class OneNodeSlurm : IDisposable
{
    static readonly TimeSpan InstallLimit = TimeSpan.FromMinutes(10);
    static readonly TimeSpan StartLimit = TimeSpan.FromMinutes(2);

    readonly List<(string Name, Process Process, StringBuilder Output)> daemons = [];
    readonly List<int> jobs = [];
    readonly Dictionary<string, string> environment;

    public string Folder { get; } = Directory.CreateTempSubdirectory("disttrain-slurm-").FullName;
    /// <summary>This host's CPUs as slurmd counts them (slurmd -C).</summary>
    public int Cpus { get; }
    /// <summary>How long the daemons took to come up (the node idle), for the test's record.</summary>
    public TimeSpan StartTime { get; }

    public OneNodeSlurm()
    {
        var clock = Stopwatch.StartNew();
        environment = new() { ["SLURM_CONF"] = Path.Combine(Folder, "slurm.conf") };
        try
        {
            if (Find("slurmctld") is null || Find("slurmd") is null || Find("munged") is null || Find("sbatch") is null) Install();
            var node = Run(Find("slurmd")!, ["-C"], TimeSpan.FromMinutes(1)).Split('\n')[0].Trim();   // NodeName=HOST CPUs=N ... RealMemory=M
            var host = NodeNameField().Match(node) is { Success: true } m ? m.Groups[1].Value : throw new InvalidOperationException($"slurmd -C printed no NodeName: {node}");
            Cpus = int.Parse(CpusField().Match(node).Groups[1].Value);
            WriteConfiguration(node, host);
            StartDaemons();
            WaitForIdleNode(host);
            StartTime = clock.Elapsed;
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Why the Slurm tests cannot run here, or null: slurmd needs root, and a missing Slurm is installed with apt-get.</summary>
    public static string? WhyNot()
    {
        if (!OperatingSystem.IsLinux()) return "needs Linux (Slurm)";
        if (geteuid() != 0) return "needs root: slurmd runs as root, and the packages slurm-wlm and munge are installed with apt-get when missing";
        if (Find("slurmctld") is null && Find("apt-get") is null) return "Slurm (slurmctld) is not installed and apt-get is not available to install slurm-wlm and munge";
        return null;
    }

    [DllImport("libc")]
    static extern uint geteuid();

    /// <summary>sbatch SCRIPT ARGS with the variables added to sbatch's environment (its default --export=ALL hands them to the job); returns the job id.</summary>
    public int Submit(string workingDirectory, string[] sbatchOptions, string script, string[] scriptArgs, IReadOnlyDictionary<string, string> variables)
    {
        var env = new Dictionary<string, string>(environment);
        foreach (var (k, v) in variables) env[k] = v;
        var output = Run(Find("sbatch")!, ["--parsable", $"--chdir={workingDirectory}", $"--output={Path.Combine(workingDirectory, "slurm-%j.out")}", .. sbatchOptions, script, .. scriptArgs],
            TimeSpan.FromMinutes(1), env);
        int id = int.Parse(output.Trim().Split(';')[0]);
        lock (jobs) jobs.Add(id);
        return id;
    }

    /// <summary>The job's output file (sbatch --output, in its working directory).</summary>
    public static string OutputOf(string workingDirectory, int job) => Path.Combine(workingDirectory, $"slurm-{job}.out");

    public void Cancel(int job) => Run(Find("scancel")!, [$"{job}"], TimeSpan.FromMinutes(1), environment);

    /// <summary>The job's JobState and ExitCode (scontrol show job; slurmctld keeps a finished job for MinJobAge).</summary>
    public (string State, string ExitCode) State(int job)
    {
        var text = Run(Find("scontrol")!, ["show", "job", "-o", $"{job}"], TimeSpan.FromMinutes(1), environment);
        return (JobStateField().Match(text).Groups[1].Value, ExitCodeField().Match(text).Groups[1].Value);
    }

    /// <summary>Waits until the job has ended (not pending, running or completing) and returns its state.</summary>
    public (string State, string ExitCode) WaitForEnd(int job, TimeSpan limit)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var state = State(job);
            if (state.State is not ("PENDING" or "CONFIGURING" or "RUNNING" or "COMPLETING" or "SUSPENDED")) return state;
            if (clock.Elapsed > limit) throw new TimeoutException($"job {job} still {state.State} after {limit}\n{Diagnostics()}");
            Thread.Sleep(1000);
        }
    }

    /// <summary>The daemons' own output, for failure messages.</summary>
    public string Diagnostics()
    {
        var text = new StringBuilder();
        foreach (var (name, process, output) in daemons)
            lock (output) text.AppendLine($"--- {name} ({(process.HasExited ? $"exited {process.ExitCode}" : "running")}):").AppendLine(Tail(output.ToString(), 3000));
        return text.ToString();
    }

    void Install()
    {
        // Debian's packages; their maintainer scripts may try to start services, which does not matter here
        var env = new Dictionary<string, string> { ["DEBIAN_FRONTEND"] = "noninteractive" };
        Run("apt-get", ["update"], InstallLimit, env, check: false);
        Run("apt-get", ["install", "-y", "--no-install-recommends", "slurm-wlm", "munge"], InstallLimit, env);
        if (Find("slurmctld") is null || Find("munged") is null)
            throw new InvalidOperationException("apt-get install slurm-wlm munge succeeded but slurmctld or munged is still not on PATH or in /usr/sbin");
    }

    void WriteConfiguration(string node, string host)
    {
        if (!OperatingSystem.IsLinux()) throw new PlatformNotSupportedException("Slurm tests run on Linux");
        foreach (var d in new[] { "state", "spool", "munge" }) Directory.CreateDirectory(Path.Combine(Folder, d));
        File.SetUnixFileMode(Path.Combine(Folder, "munge"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var key = Path.Combine(Folder, "munge", "munge.key");
        File.WriteAllBytes(key, RandomNumberGenerator.GetBytes(1024));
        File.SetUnixFileMode(key, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        // two GPUs in name only (slurmd logs that the files are no devices, and counts them): sbatch --gpus-per-node=2 is
        // granted as on a GPU node, without a GPU
        File.WriteAllText(Path.Combine(Folder, "nvidia0"), "");
        File.WriteAllText(Path.Combine(Folder, "nvidia1"), "");
        File.WriteAllText(Path.Combine(Folder, "gres.conf"), $"Name=gpu File={Path.Combine(Folder, "nvidia")}[0-1]\n");
        // no cgroups anywhere (proctrack/linuxproc, task/none): a container has no cgroup it may write to
        File.WriteAllText(Path.Combine(Folder, "slurm.conf"), $"""
            ClusterName=disttraintest
            SlurmctldHost={host}(127.0.0.1)
            SlurmUser=root
            SlurmctldPort={FreePort()}
            SlurmdPort={FreePort()}
            AuthType=auth/munge
            CredType=cred/munge
            AuthInfo=socket={Path.Combine(Folder, "munge", "socket")}
            StateSaveLocation={Path.Combine(Folder, "state")}
            SlurmdSpoolDir={Path.Combine(Folder, "spool")}
            SlurmctldPidFile={Path.Combine(Folder, "slurmctld.pid")}
            SlurmdPidFile={Path.Combine(Folder, "slurmd.pid")}
            SlurmctldLogFile={Path.Combine(Folder, "slurmctld.log")}
            SlurmdLogFile={Path.Combine(Folder, "slurmd.log")}
            ProctrackType=proctrack/linuxproc
            TaskPlugin=task/none
            SelectType=select/cons_tres
            SelectTypeParameters=CR_Core
            JobAcctGatherType=jobacct_gather/none
            AccountingStorageType=accounting_storage/none
            JobCompType=jobcomp/none
            MpiDefault=none
            ReturnToService=2
            KillWait=60
            MinJobAge=3600
            GresTypes=gpu
            {node} NodeAddr=127.0.0.1 Gres=gpu:2 State=UNKNOWN
            PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
            """);
    }

    void StartDaemons()
    {
        var conf = Path.Combine(Folder, "slurm.conf");
        var munge = Path.Combine(Folder, "munge");
        Start("munged", Find("munged")!, ["-F", "--force", $"--key-file={Path.Combine(munge, "munge.key")}", $"--socket={Path.Combine(munge, "socket")}",
            $"--pid-file={Path.Combine(munge, "munged.pid")}", $"--log-file={Path.Combine(munge, "munged.log")}", $"--seed-file={Path.Combine(munge, "munged.seed")}"]);
        WaitUntil(() => File.Exists(Path.Combine(munge, "socket")), "munged's socket");
        Start("slurmctld", Find("slurmctld")!, ["-D", "-f", conf]);
        Start("slurmd", Find("slurmd")!, ["-D", "-f", conf]);
    }

    void WaitForIdleNode(string host)
    {
        string state = "";
        WaitUntil(() =>
        {
            state = Run(Find("sinfo")!, ["-h", "-n", host, "-o", "%t"], TimeSpan.FromMinutes(1), environment, check: false).Trim();
            return state == "idle";
        }, $"node {host} idle (sinfo says '{state}')");
    }

    void WaitUntil(Func<bool> ready, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!ready())
        {
            if (daemons.FirstOrDefault(d => d.Process.HasExited) is { Name: { } name })
                throw new InvalidOperationException($"{name} exited while waiting for {what}\n{Diagnostics()}");
            if (clock.Elapsed > StartLimit) throw new TimeoutException($"no {what} after {StartLimit}\n{Diagnostics()}");
            Thread.Sleep(250);
        }
    }

    void Start(string name, string file, string[] args)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Folder };
        foreach (var a in args) start.ArgumentList.Add(a);
        foreach (var (k, v) in environment) start.Environment[k] = v;
        var process = Process.Start(start)!;
        var output = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        daemons.Add((name, process, output));
    }

    public void Dispose()
    {
        // the jobs first (their processes belong to slurmstepd, not to the daemons), then the daemons, newest first
        if (daemons.Any(d => d.Process.HasExited == false && d.Name == "slurmctld"))
        {
            int[] submitted;
            lock (jobs) submitted = [.. jobs];
            foreach (var job in submitted)
                try { Run(Find("scancel")!, ["--signal=KILL", "--full", $"{job}"], TimeSpan.FromSeconds(30), environment, check: false); } catch (TimeoutException) { }   // a finished job: scancel says so, nothing to do
            var clock = Stopwatch.StartNew();
            bool Active(int j) { try { return State(j).State is "RUNNING" or "COMPLETING" or "PENDING"; } catch (InvalidOperationException) { return false; } }
            while (clock.Elapsed < TimeSpan.FromSeconds(30) && submitted.Any(Active)) Thread.Sleep(500);
        }
        foreach (var (_, process, _) in Enumerable.Reverse(daemons))
        {
            try { if (!process.HasExited) process.Kill(entireProcessTree: true); process.WaitForExit(10_000); } catch (InvalidOperationException) { }
            process.Dispose();
        }
        daemons.Clear();
        try { Directory.Delete(Folder, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>An executable on PATH or in the sbin folders (slurmctld, slurmd and munged live in /usr/sbin).</summary>
    static string? Find(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Concat(["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"])
            .Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);

    static string Run(string file, string[] args, TimeSpan limit, IReadOnlyDictionary<string, string>? env = null, bool check = true)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) start.ArgumentList.Add(a);
        foreach (var (k, v) in env ?? new Dictionary<string, string>()) start.Environment[k] = v;
        using var process = Process.Start(start)!;
        var output = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(limit))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish in {limit}:\n{output}");
        }
        process.WaitForExit();
        if (check && process.ExitCode != 0) throw new InvalidOperationException($"{file} {string.Join(' ', args)} exited {process.ExitCode}:\n{output}");
        lock (output) return output.ToString();
    }

    static string Tail(string text, int chars) => text.Length <= chars ? text : "..." + text[^chars..];

    static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    [GeneratedRegex(@"NodeName=(\S+)")] private static partial Regex NodeNameField();
    [GeneratedRegex(@"CPUs=(\d+)")] private static partial Regex CpusField();
    [GeneratedRegex(@"JobState=(\S+)")] private static partial Regex JobStateField();
    [GeneratedRegex(@"ExitCode=(\S+)")] private static partial Regex ExitCodeField();
}

/// <summary>A fact that runs only where <see cref="OneNodeSlurm"/> can (root; Slurm installed or apt-get there), else is skipped with the reason.</summary>
public sealed class SlurmFactAttribute : FactAttribute
{
    public SlurmFactAttribute()
    {
        if (OneNodeSlurm.WhyNot() is { } why) Skip = $"no real Slurm here: {why}";
    }

    /// <summary>Only on a host without NVIDIA GPUs (a case that relies on launch finding none).</summary>
    public bool WithoutGpus
    {
        get => false;
        init { if (value && Skip is null && Directory.Exists("/proc/driver/nvidia/gpus")) Skip = "this host has NVIDIA GPUs: the job would train the 405M model on them"; }
    }
}
