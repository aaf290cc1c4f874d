using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;

namespace DistTrain.Cli.Tests;

/// <summary>coordinator.port: auto on one node, and a worker that reached another job's coordinator (issue 14, item 2).</summary>
public class CoordinatorPortTests
{
    static readonly TimeSpan Limit = TimeSpan.FromMinutes(8);   // a 2-worker job on a loaded 2-core machine

    [Fact]
    public void LaunchPicksAFreePortForAutoAndTheJobRunsOnIt()
    {
        using var dir = new TempFolder();
        var manifest = Path.Combine(dir.Path, "auto.yaml");
        File.WriteAllText(manifest, """
            job: auto-port
            backend: ring
            coordinator: {host: 127.0.0.1, port: auto}
            token: value:t
            heartbeat: {interval_s: 0.5, timeout_s: 30}
            nodes:
              - {host: 127.0.0.1, cpus: 2}
            """);
        var (code, output) = Disttrain.Run(Limit, "launch", "--manifest", manifest, "--config", "configs/tiny-transformerpp.yaml", "--set", "train.steps=4",
            "--set", "train.log_interval=2", "--set", "train.seq_len=32", "--set", "train.micro_batch=2", "--set", "train.eval_interval=0",
            "--set", "train.eval_batches=1", "--set", "checkpoint.interval=0", "--set", $"train.run_dir={Path.Combine(dir.Path, "runs")}");
        Assert.True(code == 0, output);
        var port = Regex.Match(output, @"\[launch\] coordinator\.port auto: port (\d+)").Groups[1].Value;
        Assert.NotEqual("", port);
        Assert.Contains($"coordinator for job 'auto-port' on 127.0.0.1:{port}", output);
        Assert.Matches(@"\[rank 0\] step\s+4 ", output);
    }

    [Fact]
    public void AWorkerRefusedByAnotherJobsCoordinatorSaysThePortMayBelongToAnotherJob()
    {
        using var dir = new TempFolder();
        int port;
        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            port = ((IPEndPoint)probe.LocalEndpoint).Port;
        }
        string Manifest(string job, string token)
        {
            var path = Path.Combine(dir.Path, $"{job}.yaml");
            File.WriteAllText(path, $$"""
                job: {{job}}
                backend: ring
                coordinator: {host: 127.0.0.1, port: {{port}}}
                token: value:{{token}}
                heartbeat: {interval_s: 0.5, timeout_s: 30, connect_timeout_s: 30}
                nodes:
                  - {host: 127.0.0.1, cpus: 1}
                """);
            return path;
        }
        var (other, output) = Disttrain.Start("coordinator", "--manifest", Manifest("other-job", "their-secret"), "--config", "configs/tiny-muddformer.yaml");
        using (other)
        {
            try
            {
                StopTests.WaitFor(other, output, "waiting for 1 workers");
                var mine = Manifest("my-job", "my-secret");
                var (code, refused) = Disttrain.Run(Limit, "worker", "--manifest", mine, "--config", "configs/tiny-muddformer.yaml");
                Assert.True(code == 2, refused);
                Assert.Contains($"error: the coordinator at 127.0.0.1:{port} refused this worker (wrong job token", refused);
                Assert.Contains($"it may belong to another job using port {port}: stop that job or give this one another coordinator.port in {mine} " +
                    "(on one node, coordinator.port: auto picks a free one)", refused);
                Assert.Contains("if it is this job's coordinator, every process needs the same token (the manifest's value:)", refused);
                Assert.DoesNotContain("my-secret", refused);   // a literal token is never printed
                Assert.DoesNotContain("   at ", refused);
            }
            finally { other.Kill(entireProcessTree: true); }
        }
    }
}
