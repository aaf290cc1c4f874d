using System.Diagnostics;
using System.Text;

namespace DistTrain.Cli.Tests;

/// <summary>Runs the real disttrain executable (built next to these tests) with a timeout of its own.</summary>
static class Disttrain
{
    public static string RepoRoot { get; } = FindRoot();

    public static (int ExitCode, string Output) Run(TimeSpan timeout, params string[] args)
    {
        // tests/DistTrain.Cli.Tests/bin/<Configuration>/net10.0/ -> src/DistTrain.Cli/bin/<Configuration>/net10.0/disttrain.dll
        var configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name;
        var dll = Path.Combine(RepoRoot, "src", "DistTrain.Cli", "bin", configuration, "net10.0", "disttrain.dll");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = RepoRoot };
        start.ArgumentList.Add(dll);
        foreach (var a in args) start.ArgumentList.Add(a);
        start.Environment["NO_COLOR"] = "1";
        using var process = Process.Start(start)!;
        var output = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"disttrain {string.Join(' ', args)} did not finish in {timeout}:\n{output}");
        }
        process.WaitForExit();
        return (process.ExitCode, output.ToString());
    }

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "DistTrain.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("DistTrain.sln not found above " + AppContext.BaseDirectory);
    }
}
