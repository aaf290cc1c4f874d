using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace DistTrain.Training.Cluster;

/// <summary>
/// The two questions TLS asks of a peer's certificate, answered in words: does its chain end at one of our anchors
/// (tls.ca, or the system's roots when none), for the right use; and is the host we dialled one of its subjectAltNames.
/// Null means yes.
/// </summary>
public static class CertificateCheck
{
    public static readonly Oid ServerAuth = new("1.3.6.1.5.5.7.3.1", "TLS Web Server Authentication");
    public static readonly Oid ClientAuth = new("1.3.6.1.5.5.7.3.2", "TLS Web Client Authentication");

    /// <summary>How this process builds chains: only the anchors (when given), no revocation lookups or downloads (nodes are often offline), for one use.</summary>
    public static X509ChainPolicy Policy(X509Certificate2Collection? anchors, Oid usage)
    {
        var policy = new X509ChainPolicy
        {
            RevocationMode = X509RevocationMode.NoCheck,
            DisableCertificateDownloads = true,
            TrustMode = anchors is null ? X509ChainTrustMode.System : X509ChainTrustMode.CustomRootTrust,
        };
        policy.ApplicationPolicy.Add(usage);
        if (anchors is not null) policy.CustomTrustStore.AddRange(anchors);
        return policy;
    }

    /// <summary>Why the chain of <paramref name="certificate"/> is not trusted, or null when it ends at an anchor.</summary>
    /// <param name="presented">the other certificates the peer sent (intermediates)</param>
    public static string? ChainProblem(X509Certificate2 certificate, IEnumerable<X509Certificate2> presented, X509Certificate2Collection? anchors, Oid usage)
    {
        using var chain = new X509Chain { ChainPolicy = Policy(anchors, usage) };
        chain.ChainPolicy.ExtraStore.AddRange(presented.Where(c => !c.RawDataMemory.Span.SequenceEqual(certificate.RawDataMemory.Span)).ToArray());
        if (chain.Build(certificate)) return null;
        var flags = chain.ChainStatus.Select(s => s.Status).Aggregate(X509ChainStatusFlags.NoError, (a, b) => a | b);
        var trust = anchors is null ? "the system's trusted roots" : "the CA in tls.ca";
        string why = flags switch
        {
            _ when flags.HasFlag(X509ChainStatusFlags.UntrustedRoot) || flags.HasFlag(X509ChainStatusFlags.PartialChain) =>
                $"it was not signed by {trust} (issuer: {certificate.Issuer})",
            _ when flags.HasFlag(X509ChainStatusFlags.NotTimeValid) =>
                $"it is valid from {certificate.NotBefore:u} to {certificate.NotAfter:u}, not now",
            _ when flags.HasFlag(X509ChainStatusFlags.NotValidForUsage) =>
                $"its extended key usage does not allow {usage.FriendlyName}",
            _ => string.Join("; ", chain.ChainStatus.Select(s => s.StatusInformation.Trim()).Distinct()),
        };
        return $"the certificate for {Subject(certificate)} is not trusted: {why}";
    }

    /// <summary>Why <paramref name="host"/> (a DNS name or an IP address) is not one of the certificate's subjectAltNames, or null when it is.</summary>
    public static string? NameProblem(X509Certificate2 certificate, string host)
    {
        // the subjectAltName only, as browsers do: a common name is not a host name
        if (certificate.MatchesHostname(host, allowWildcards: true, allowCommonName: false)) return null;
        var names = Names(certificate);
        return $"the certificate is for {(names.Count == 0 ? "no host (it has no subjectAltName)" : string.Join(", ", names))}, not {host} (the address dialled)";
    }

    /// <summary>The certificate's subjectAltNames as "DNS:name" and "IP:address".</summary>
    public static IReadOnlyList<string> Names(X509Certificate2 certificate)
    {
        if (certificate.Extensions["2.5.29.17"] is not { } raw) return [];
        var san = raw as X509SubjectAlternativeNameExtension ?? new X509SubjectAlternativeNameExtension(raw.RawData, raw.Critical);
        return [.. san.EnumerateDnsNames().Select(n => $"DNS:{n}"), .. san.EnumerateIPAddresses().Select(a => $"IP:{a}")];
    }

    static string Subject(X509Certificate2 c) => c.GetNameInfo(X509NameType.SimpleName, forIssuer: false) is { Length: > 0 } name ? $"'{name}'" : c.Subject;
}
