using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using DistTrain.Training.Cluster;
using Grpc.Core;

namespace DistTrain.Worker;

/// <summary>Raised in the TLS handshake when this worker refuses the coordinator's certificate; the message says why and what to change.</summary>
public sealed class CoordinatorCertificateException(string message) : Exception(message);

/// <summary>
/// The worker's side of TLS to the coordinator: the coordinator's chain must end at the CA in tls.ca (no other root),
/// the host the worker dials must be one of the certificate's subjectAltNames (DNS or IP), and under mutual TLS
/// the worker presents tls.client_cert.
/// </summary>
public static class ClientTls
{
    public static void Configure(SocketsHttpHandler handler, ClusterManifest m, Uri address)
    {
        var tls = m.Tls ?? throw new InvalidOperationException("the manifest has no tls section");
        var anchors = TlsFiles.TrustAnchors(m);
        var host = address.IdnHost.Trim('[', ']');   // an IPv6 literal without its brackets
        var trust = tls.CaPath is null
            ? "the system's trusted roots (the manifest has no tls.ca): give tls.ca the certificate of the CA that signed the coordinator's"
            : $"the CA in tls.ca ({tls.CaPath}): sign the coordinator's certificate with that CA, or point tls.ca at the CA that signed it";
        handler.SslOptions.CertificateChainPolicy = CertificateCheck.Policy(anchors, CertificateCheck.ServerAuth);
        handler.SslOptions.CertificateRevocationCheckMode = X509RevocationMode.NoCheck;
        handler.SslOptions.RemoteCertificateValidationCallback = (_, presented, chain, _) =>
        {
            if (presented is null)
                throw new CoordinatorCertificateException($"the coordinator at {address} sent no certificate");
            var certificate = presented as X509Certificate2 ?? X509CertificateLoader.LoadCertificate(presented.GetRawCertData());
            if (CertificateCheck.ChainProblem(certificate, chain?.ChainPolicy.ExtraStore ?? [], anchors, CertificateCheck.ServerAuth) is { } untrusted)
                throw new CoordinatorCertificateException($"refused the coordinator at {address}: {untrusted}; this worker trusts only {trust}");
            if (CertificateCheck.NameProblem(certificate, host) is { } misnamed)
                throw new CoordinatorCertificateException($"refused the coordinator at {address}: {misnamed}; give the coordinator a certificate whose subjectAltName holds {(System.Net.IPAddress.TryParse(host, out _) ? "IP" : "DNS")}:{host}, or set coordinator.host to one of its names");
            return true;
        };
        if (tls.Mutual)
        {
            var mine = TlsFiles.ClientCertificate(m);
            handler.SslOptions.ClientCertificates = [mine];
            // always this one: the default choice drops a certificate whose issuer is not in the server's hint list
            handler.SslOptions.LocalCertificateSelectionCallback = (_, _, _, _, _) => mine;
        }
    }

    /// <summary>This worker's refusal of the coordinator's certificate behind a failed call, if that is why it failed.</summary>
    public static CoordinatorCertificateException? Refusal(Exception? e)
    {
        for (; e is not null; e = e is RpcException r && r.Status.DebugException is { } debug ? debug : e.InnerException)
            if (e is CoordinatorCertificateException refused) return refused;
        return null;
    }
}
