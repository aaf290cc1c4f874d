using DistTrain.Training.Cluster;
using DistTrain.Training.Config;

namespace DistTrain.Coordinator.Tests;

/// <summary>A manifest's tls section: each mistake is refused at start naming the manifest, the field and the file.</summary>
public class TlsManifestTests : IDisposable
{
    readonly TempDir _dir = new();
    readonly TestPki _ca;

    public TlsManifestTests() => _ca = new TestPki(_dir.Path, "ca");

    public void Dispose() => _dir.Dispose();

    string Manifest(string tls) => _dir.Write("m.yaml", $"job: t\ntoken: value:x\n{tls}\nnodes:\n  - {{host: 127.0.0.1, cpus: 1}}\n");

    string Error(string tls, bool coordinator = true, bool worker = true) =>
        Assert.Throws<ConfigException>(() => TlsFiles.Check(ManifestLoader.Load(Manifest(tls)), coordinator, worker)).Message;

    [Fact(Timeout = 60_000)]
    public async Task EveryMistakeNamesTheFieldAndTheFile()
    {
        await Task.Yield();
        var (cert, key) = _ca.Server("coordinator", "127.0.0.1");
        var (clientCert, clientKey) = _ca.Client("worker");
        var m = Manifest("");

        Assert.Equal($"{m}: tls.ca: {_ca.CaWithKeyPath} holds a private key; give the CA's certificate only (openssl x509 -in ca-ca-with-key.pem -out ca-cert.pem) and keep the CA key off the nodes",
            Error($"tls: {{cert: {cert}, key: {key}, ca: {_ca.CaWithKeyPath}}}", coordinator: false));
        Assert.StartsWith($"{m}: tls.ca: {_dir.Path}/missing.pem not found;", Error($"tls: {{cert: {cert}, key: {key}, ca: missing.pem}}"));
        Assert.StartsWith($"{m}: tls.key: {clientKey} is not the private key of the first certificate in tls.cert ({cert})", Error($"tls: {{cert: {cert}, key: {clientKey}}}"));
        Assert.StartsWith($"{m}: tls.key: {cert} holds no PEM private key", Error($"tls: {{cert: {cert}, key: {cert}}}"));
        Assert.StartsWith($"{m}: tls.cert: {key} holds no PEM certificate", Error($"tls: {{cert: {key}, key: {key}}}"));
        Assert.StartsWith($"{m}: tls.client_key: {_dir.Path}/nope.pem not found", Error($"tls: {{cert: {cert}, key: {key}, ca: {_ca.CaPath}, client_cert: {clientCert}, client_key: nope.pem}}", coordinator: false));
        Assert.StartsWith($"{m}: tls: give both client_cert and client_key", Error($"tls: {{cert: {cert}, key: {key}, ca: {_ca.CaPath}, client_cert: {clientCert}}}"));
        Assert.StartsWith($"{m}: tls.ca: mutual TLS (tls.client_cert) needs the CA", Error($"tls: {{cert: {cert}, key: {key}, client_cert: {clientCert}, client_key: {clientKey}}}"));
        Assert.StartsWith($"{m}: tls: give both cert and key", Error($"tls: {{ca: {_ca.CaPath}}}"));

        // each process reads only its own files: a worker node needs no server key, the coordinator no client certificate
        TlsFiles.Check(ManifestLoader.Load(Manifest($"tls: {{cert: {cert}, key: /not/on/this/node.pem, ca: {_ca.CaPath}, client_cert: {clientCert}, client_key: {clientKey}}}")), coordinator: false, worker: true);
        TlsFiles.Check(ManifestLoader.Load(Manifest($"tls: {{cert: {cert}, key: {key}, ca: {_ca.CaPath}, client_cert: /not/here.pem, client_key: /not/here-key.pem}}")), coordinator: true, worker: false);
    }
}
