using System.Text.RegularExpressions;

namespace DistTrain.Cli.Tests;

/// <summary>`disttrain launch` over TLS with real coordinator and worker processes, a CA and certificates made for each test.</summary>
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
}
