using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace DistTrain.Tests.Shared;

/// <summary>
/// A certificate authority made for one test with .NET's CertificateRequest (nothing checked in): its certificate
/// (ca.pem, no key) and the certificates it issues, written as PEM files into <paramref name="dir"/>.
/// </summary>
sealed class TestPki
{
    const string ServerAuth = "1.3.6.1.5.5.7.3.1", ClientAuth = "1.3.6.1.5.5.7.3.2";
    readonly string _dir, _name;
    readonly X509Certificate2 _ca;
    readonly ECDsa _caKey;
    long _serial;

    public TestPki(string dir, string name)
    {
        (_dir, _name) = (dir, name);
        _caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", _caKey, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 1, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        _ca = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        CaPath = Write($"{name}-ca.pem", _ca.ExportCertificatePem());
        CaWithKeyPath = Write($"{name}-ca-with-key.pem", _ca.ExportCertificatePem() + "\n" + _caKey.ExportPkcs8PrivateKeyPem());
    }

    /// <summary>The CA's certificate only: what tls.ca should hold.</summary>
    public string CaPath { get; }

    /// <summary>The CA's certificate and its private key in one file: the old, unsafe setup.</summary>
    public string CaWithKeyPath { get; }

    /// <summary>A server certificate (serverAuth) for the given subjectAltNames.</summary>
    public (string Cert, string Key) Server(string name, params string[] altNames) => Issue(name, ServerAuth, altNames);

    /// <summary>A worker's client certificate (clientAuth).</summary>
    public (string Cert, string Key) Client(string name) => Issue(name, ClientAuth, []);

    (string, string) Issue(string name, string usage, string[] altNames)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(usage)], false));
        if (altNames.Length > 0)
        {
            var san = new SubjectAlternativeNameBuilder();
            foreach (var n in altNames)
                if (IPAddress.TryParse(n, out var ip)) san.AddIpAddress(ip); else san.AddDnsName(n);
            request.CertificateExtensions.Add(san.Build());
        }
        var serial = BitConverter.GetBytes(Interlocked.Increment(ref _serial) + 1000);
        using var issued = request.Create(_ca, DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddDays(7), serial);
        var file = $"{_name}-{name}";
        return (Write($"{file}.pem", issued.ExportCertificatePem()), Write($"{file}-key.pem", key.ExportPkcs8PrivateKeyPem()));
    }

    string Write(string name, string pem)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, pem + "\n");
        return path;
    }
}
