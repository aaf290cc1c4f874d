using System.Diagnostics;
using System.Text;

namespace DistTrain.Cli.Tests;

/// <summary>Runs the real disttrain executable (built next to these tests) with a timeout of its own.</summary>
static class Disttrain
{
    public static string RepoRoot { get; } = FindRoot();

    /// <summary>The built disttrain.dll: tests/DistTrain.Cli.Tests/bin/&lt;Configuration&gt;/net10.0/ -> src/DistTrain.Cli/bin/&lt;Configuration&gt;/net10.0/disttrain.dll.</summary>
    public static string Dll { get; } = Path.Combine(RepoRoot, "src", "DistTrain.Cli", "bin", new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name, "net10.0", "disttrain.dll");

    /// <summary>The build's apphost next to the dll (an executable, for scripts that take a binary: DISTTRAIN_BIN); it needs <see cref="DotnetRoot"/>.</summary>
    public static string Executable { get; } = Path.ChangeExtension(Dll, null);

    /// <summary>The folder of the .NET install running the tests (DOTNET_ROOT for the apphost).</summary>
    public static string DotnetRoot { get; } = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(typeof(object).Assembly.Location)!, "..", "..", ".."));

    public static (int ExitCode, string Output) Run(TimeSpan timeout, params string[] args) => Run(timeout, args, []);

    public static (int ExitCode, string Output) Run(TimeSpan timeout, string[] args, params (string Name, string Value)[] environment) =>
        RunIn(RepoRoot, timeout, args, environment);

    /// <summary>Runs disttrain with <paramref name="workingDirectory"/> as its current folder (relative paths in args are relative to it).</summary>
    public static (int ExitCode, string Output) RunIn(string workingDirectory, TimeSpan timeout, string[] args, params (string Name, string Value)[] environment)
    {
        var (process, output) = Start(args, environment, workingDirectory);
        using var _ = process;
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"disttrain {string.Join(' ', args)} did not finish in {timeout}:\n{output}");
        }
        process.WaitForExit();
        return (process.ExitCode, output.ToString());
    }

    /// <summary>Starts disttrain and collects its output (stdout and stderr) as it comes.</summary>
    public static (Process Process, StringBuilder Output) Start(params string[] args) => Start(args, []);

    public static (Process Process, StringBuilder Output) Start(string[] args, params (string Name, string Value)[] environment) => Start(args, environment, RepoRoot);

    static (Process Process, StringBuilder Output) Start(string[] args, (string Name, string Value)[] environment, string workingDirectory)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = workingDirectory };
        start.ArgumentList.Add(Dll);
        foreach (var a in args) start.ArgumentList.Add(a);
        start.Environment["NO_COLOR"] = "1";
        foreach (var (name, value) in environment) start.Environment[name] = value;
        var process = Process.Start(start)!;
        var output = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return (process, output);
    }

    /// <summary>A manifest for <paramref name="workers"/> CPU workers on loopback, on a free port, with a literal token; a heartbeat timeout that survives a loaded 2-core machine (10 s did not).</summary>
    /// <param name="tls">the tls section as one YAML line ("tls: {cert: ..., key: ..., ca: ...}"), or null for none</param>
    public static string LocalManifest(string dir, int workers, double heartbeatTimeout = 30, double connectTimeout = 60, string? tls = null)
    {
        var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        int port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var path = Path.Combine(dir, $"local-{workers}.yaml");
        File.WriteAllText(path, $$"""
            job: test-{{workers}}
            backend: ring
            coordinator: {host: 127.0.0.1, port: {{port}}}
            token: value:test-token
            heartbeat: {interval_s: 0.5, timeout_s: {{heartbeatTimeout.ToString(System.Globalization.CultureInfo.InvariantCulture)}}, connect_timeout_s: {{connectTimeout.ToString(System.Globalization.CultureInfo.InvariantCulture)}}}
            {{tls ?? ""}}
            nodes:
              - {host: 127.0.0.1, cpus: {{workers}}}
            """);
        return path;
    }

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "DistTrain.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("DistTrain.sln not found above " + AppContext.BaseDirectory);
    }
}
