using System.Text.RegularExpressions;

namespace DistTrain.Cli.Tests;

/// <summary>`disttrain launch`, `coordinator` and `worker` over TLS as real processes, with a CA and certificates made for each test.</summary>
public class TlsLaunchTests
{
    static readonly TimeSpan Limit = TimeSpan.FromMinutes(6);

    static string[] Tiny(string runs) =>
    [
        "--config", "configs/tiny-muddformer.yaml", "--set", "train.steps=2", "--set", "train.log_interval=1", "--set", "train.seq_len=32",
        "--set", "train.global_batch=4", "--set", "train.micro_batch=2", "--set", "data.shards=2", "--set", "train.eval_interval=0",
        "--set", "optim.warmup_steps=1", "--set", $"train.run_dir={runs}",
    ];

    [Fact]
    public void TwoWorkersTrainUnderMutualTlsAndTheirRingProvesTheToken()
    {
        using var dir = new TempFolder();
        var ca = new TestPki(dir.Path, "job-ca");
        var (cert, key) = ca.Server("coordinator", "127.0.0.1");
        var (clientCert, clientKey) = ca.Client("worker");
        var tls = $"tls: {{cert: {cert}, key: {key}, ca: {ca.CaPath}, client_cert: {clientCert}, client_key: {clientKey}}}";
        var (code, output) = Disttrain.Run(Limit, ["launch", "--manifest", Disttrain.LocalManifest(dir.Path, 2, tls: tls), .. Tiny(dir.Path)]);
        Assert.True(code == 0, output);
        Assert.Contains("job 'test-2' finished", output);
    }

    [Fact]
    public void WorkersRefuseACoordinatorCertificateForAnotherNameAndSayWhy()
    {
        using var dir = new TempFolder();
        var ca = new TestPki(dir.Path, "job-ca");
        var (cert, key) = ca.Server("evil", "evil.example");   // signed by the job's CA: only the name is wrong
        var tls = $"tls: {{cert: {cert}, key: {key}, ca: {ca.CaPath}}}";
        var (code, output) = Disttrain.Run(Limit, ["launch", "--manifest", Disttrain.LocalManifest(dir.Path, 1, tls: tls), .. Tiny(dir.Path)]);
        Assert.NotEqual(0, code);
        Assert.True(Regex.IsMatch(output, @"error: refused the coordinator at https://127\.0\.0\.1:\d+/: the certificate is for DNS:evil\.example, not 127\.0\.0\.1 \(the address dialled\); give the coordinator a certificate whose subjectAltName holds IP:127\.0\.0\.1"), output);
        Assert.DoesNotContain("   at ", output);   // no stack trace
    }

    [Fact]
    public void ACaFileHoldingThePrivateKeyIsRefusedBeforeAnythingStarts()
    {
        using var dir = new TempFolder();
        var ca = new TestPki(dir.Path, "job-ca");
        var (cert, key) = ca.Server("coordinator", "127.0.0.1");
        var manifest = Disttrain.LocalManifest(dir.Path, 1, tls: $"tls: {{cert: {cert}, key: {key}, ca: {ca.CaWithKeyPath}}}");
        var (code, output) = Disttrain.Run(TimeSpan.FromMinutes(2), ["launch", "--manifest", manifest, .. Tiny(dir.Path)]);
        Assert.Equal(2, code);
        Assert.Equal($"error: {manifest}: tls.ca: {ca.CaWithKeyPath} holds a private key; give the CA's certificate only (openssl x509 -in job-ca-ca-with-key.pem -out ca-cert.pem) and keep the CA key off the nodes", output.Trim());
    }

    [Fact]
    public void APlaintextWorkerIsRefusedByATlsCoordinator()
    {
        using var dir = new TempFolder();
        var ca = new TestPki(dir.Path, "job-ca");
        var (cert, key) = ca.Server("coordinator", "127.0.0.1");
        var (code, output) = WorkerAgainst(dir.Path, $"tls: {{cert: {cert}, key: {key}, ca: {ca.CaPath}}}", workerTls: "");
        Assert.True(code == 2, output);
        Assert.Matches(@"error: the connection to the coordinator at http://127\.0\.0\.1:\d+ failed: if the coordinator serves TLS, this node's manifest needs the job's tls section", output);
    }

    [Fact]
    public void UnderMutualTlsAWorkerWithoutACertificateIsRefused()
    {
        using var dir = new TempFolder();
        var ca = new TestPki(dir.Path, "job-ca");
        var (cert, key) = ca.Server("coordinator", "127.0.0.1");
        var (clientCert, clientKey) = ca.Client("worker");
        var (code, output) = WorkerAgainst(dir.Path, $"tls: {{cert: {cert}, key: {key}, ca: {ca.CaPath}, client_cert: {clientCert}, client_key: {clientKey}}}",
            workerTls: $"tls: {{cert: {cert}, key: /not/on/worker/nodes.pem, ca: {ca.CaPath}}}");
        Assert.True(code == 2, output);
        Assert.Matches(@"error: the connection to the coordinator at https://127\.0\.0\.1:\d+ failed: if the coordinator requires client certificates \(mutual TLS\), this node's manifest needs tls.client_cert and tls.client_key", output);
    }

    /// <summary>A coordinator with <paramref name="coordinatorTls"/> and one worker whose manifest has <paramref name="workerTls"/> instead: the worker's exit code and output.</summary>
    static (int ExitCode, string Output) WorkerAgainst(string dir, string coordinatorTls, string workerTls)
    {
        var manifest = Disttrain.LocalManifest(dir, 1, connectTimeout: 20, tls: coordinatorTls);
        var workerManifest = Path.Combine(dir, "worker.yaml");
        File.WriteAllText(workerManifest, File.ReadAllText(manifest).Replace(coordinatorTls, workerTls));
        var (coordinator, coordinatorOutput) = Disttrain.Start(["coordinator", "--manifest", manifest, .. Tiny(dir)]);
        using var _ = coordinator;
        try
        {
            var (code, output) = Disttrain.Run(Limit, ["worker", "--manifest", workerManifest, "--node-rank", "0", "--local-slot", "0", .. Tiny(dir)]);
            Assert.False(coordinator.HasExited, $"the coordinator exited early:\n{coordinatorOutput}");
            return (code, output);
        }
        finally
        {
            coordinator.Kill(entireProcessTree: true);
        }
    }
}
