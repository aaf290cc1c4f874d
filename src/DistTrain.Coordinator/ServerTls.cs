using System.Security.Cryptography.X509Certificates;
using DistTrain.Training.Cluster;
using Microsoft.AspNetCore.Server.Kestrel.Https;

namespace DistTrain.Coordinator;

/// <summary>
/// The coordinator's side of TLS: it serves tls.cert (with any intermediates after it in the file); under mutual TLS it
/// requires a client certificate whose chain ends at the CA in tls.ca, for client use, and refuses every other one.
/// A plaintext client gets no answer at all: the port speaks only TLS.
/// </summary>
static class ServerTls
{
    /// <param name="log">where a refused worker certificate is reported (the worker itself sees only a closed connection)</param>
    public static HttpsConnectionAdapterOptions Options(ClusterManifest m, Action<string> log)
    {
        var tls = m.Tls ?? throw new InvalidOperationException("the manifest has no tls section");
        var (certificate, intermediates) = TlsFiles.ServerCertificate(m);
        var options = new HttpsConnectionAdapterOptions
        {
            ServerCertificate = certificate,
            ServerCertificateChain = intermediates,
            CheckCertificateRevocation = false,
            ClientCertificateMode = tls.Mutual ? ClientCertificateMode.RequireCertificate : ClientCertificateMode.NoCertificate,
        };
        if (!tls.Mutual) return options;
        var anchors = TlsFiles.TrustAnchors(m)!;
        options.ClientCertificateValidation = (client, chain, _) =>
        {
            var problem = CertificateCheck.ChainProblem(client, chain?.ChainPolicy.ExtraStore ?? [], anchors, CertificateCheck.ClientAuth);
            if (problem is not null) log($"refused a worker's TLS connection: {problem}; workers need a certificate signed by the CA in tls.ca ({tls.CaPath})");
            return problem is null;
        };
        return options;
    }
}
