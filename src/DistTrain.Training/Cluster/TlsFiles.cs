using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using DistTrain.Training.Config;

namespace DistTrain.Training.Cluster;

/// <summary>
/// Reads the PEM files of a manifest's tls section, each for the process that needs it: the coordinator's
/// certificate and key, the CA that workers trust (a certificate only: a CA key on every node would let any node
/// mint certificates), a worker's client certificate and key. Every problem names the manifest, the field and the file.
/// </summary>
public static class TlsFiles
{
    /// <summary>The coordinator's certificate with its key, and any intermediate certificates after it in tls.cert.</summary>
    public static (X509Certificate2 Certificate, X509Certificate2Collection Intermediates) ServerCertificate(ClusterManifest m)
    {
        var tls = m.Tls ?? throw new InvalidOperationException("the manifest has no tls section");
        return WithKey(m, "tls.cert", tls.CertificatePath, "tls.key", tls.KeyPath);
    }

    /// <summary>The certificate a worker presents under mutual TLS, with its key.</summary>
    public static X509Certificate2 ClientCertificate(ClusterManifest m)
    {
        var tls = m.Tls ?? throw new InvalidOperationException("the manifest has no tls section");
        if (tls.ClientCertificatePath is null || tls.ClientKeyPath is null) throw new InvalidOperationException("the manifest does not ask for mutual TLS");
        return WithKey(m, "tls.client_cert", tls.ClientCertificatePath, "tls.client_key", tls.ClientKeyPath).Certificate;
    }

    /// <summary>The certificates in tls.ca, the only roots a chain may end at; null when the manifest names none (the system's trust store then).</summary>
    public static X509Certificate2Collection? TrustAnchors(ClusterManifest m)
    {
        if (m.Tls?.CaPath is not { } path) return null;
        var text = Read(m, "tls.ca", path);
        if (Labels(text).Any(IsPrivateKey))
            throw new ConfigException($"{m.Source}: tls.ca: {path} holds a private key; give the CA's certificate only (openssl x509 -in {Path.GetFileName(path)} -out ca-cert.pem) and keep the CA key off the nodes");
        return Certificates(m, "tls.ca", path, text);
    }

    /// <summary>Reads every file this process will need, so that a mistake fails at start with its field named.</summary>
    public static void Check(ClusterManifest m, bool coordinator, bool worker)
    {
        if (m.Tls is null) return;
        if (coordinator)
        {
            ServerCertificate(m).Certificate.Dispose();
            TrustAnchors(m);   // under mutual TLS the coordinator checks workers against it
        }
        if (worker)
        {
            TrustAnchors(m);
            if (m.Tls.Mutual) ClientCertificate(m).Dispose();
        }
    }

    static (X509Certificate2 Certificate, X509Certificate2Collection Intermediates) WithKey(ClusterManifest m, string certField, string certPath, string keyField, string keyPath)
    {
        var certificates = Certificates(m, certField, certPath, Read(m, certField, certPath));
        var keyText = Read(m, keyField, keyPath);
        if (!Labels(keyText).Any(IsPrivateKey))
            throw new ConfigException($"{m.Source}: {keyField}: {keyPath} holds no PEM private key (-----BEGIN PRIVATE KEY-----); give the key of the certificate in {certField}");
        if (Labels(keyText).Contains("ENCRYPTED PRIVATE KEY"))
            throw new ConfigException($"{m.Source}: {keyField}: {keyPath} is encrypted; give an unencrypted key (openssl pkey -in {Path.GetFileName(keyPath)} -out key.pem) readable only by the job's user");
        try
        {
            var leaf = X509Certificate2.CreateFromPem(File.ReadAllText(certPath), keyText);
            certificates.RemoveAt(0);
            return (leaf, certificates);
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException)   // a key of another certificate: ArgumentException
        {
            throw new ConfigException($"{m.Source}: {keyField}: {keyPath} is not the private key of the first certificate in {certField} ({certPath}): {e.Message}");
        }
    }

    static X509Certificate2Collection Certificates(ClusterManifest m, string field, string path, string text)
    {
        var certificates = new X509Certificate2Collection();
        try { certificates.ImportFromPem(text); }
        catch (CryptographicException e) { throw new ConfigException($"{m.Source}: {field}: {path} holds a PEM certificate that cannot be read: {e.Message}"); }
        if (certificates.Count == 0)
            throw new ConfigException($"{m.Source}: {field}: {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
        return certificates;
    }

    static string Read(ClusterManifest m, string field, string path)
    {
        if (!File.Exists(path)) throw new ConfigException($"{m.Source}: {field}: {path} not found; put the PEM file there on this node, or fix the path (relative paths start at the manifest's folder)");
        try { return File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ConfigException($"{m.Source}: {field}: {path} cannot be read: {e.Message}"); }
    }

    static bool IsPrivateKey(string label) => label.EndsWith("PRIVATE KEY", StringComparison.Ordinal);

    /// <summary>The labels of the PEM blocks in a file ("CERTIFICATE", "PRIVATE KEY", ...), in order.</summary>
    static List<string> Labels(string text)
    {
        var labels = new List<string>();
        var rest = text.AsSpan();
        while (PemEncoding.TryFind(rest, out var fields))
        {
            labels.Add(rest[fields.Label].ToString());
            rest = rest[fields.Location.End..];
        }
        return labels;
    }
}
