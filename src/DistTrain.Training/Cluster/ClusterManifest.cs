namespace DistTrain.Training.Cluster;

/// <summary>One node of a cluster manifest: a host with GPUs (nccl) or CPU slots (ring).</summary>
public sealed record NodeSpec(string Host, IReadOnlyList<int> Gpus, int CpuSlots)
{
    /// <summary>Worker processes this node runs: one per GPU, or one per CPU slot.</summary>
    public int Slots => Gpus.Count > 0 ? Gpus.Count : CpuSlots;
}

/// <summary>
/// Optional TLS for the coordinator (absolute paths of PEM files): the coordinator's certificate and key; the CA that
/// workers trust (a certificate only; without it, the system's trust store); under mutual TLS, the certificate and
/// key every worker presents, which the coordinator checks against the same CA.
/// </summary>
public sealed record TlsSpec(string CertificatePath, string KeyPath, string? CaPath, string? ClientCertificatePath, string? ClientKeyPath)
{
    /// <summary>Workers present a client certificate and the coordinator requires one.</summary>
    public bool Mutual => ClientCertificatePath is not null;
}

/// <summary>
/// Where a job runs: its name, the coordinator's address, the nodes with their GPUs or CPU slots,
/// the communicator backend, how the job token is found, heartbeat timing and optional TLS.
/// Ranks are assigned in node order, then local slot.
/// </summary>
public sealed record ClusterManifest(
    string Source, string Job, string Backend, string CoordinatorHost, int CoordinatorPort, string BindAddress,
    int CoordinatorNode, string TokenSource, double HeartbeatIntervalSeconds, double HeartbeatTimeoutSeconds,
    double RendezvousTimeoutSeconds, double ConnectTimeoutSeconds, TlsSpec? Tls, IReadOnlyList<NodeSpec> Nodes)
{
    /// <summary>The metadata header that carries the job token on every coordinator call.</summary>
    public const string TokenHeader = "x-disttrain-token";

    public int WorldSize => Nodes.Sum(n => n.Slots);

    /// <summary>coordinator.port: auto (one node only): `launch` picks a free port and passes it to its children (--port); CoordinatorPort is 0 until then.</summary>
    public bool PortIsAuto { get; init; }

    /// <summary>The manifest with the port a launch picked (or --port gave).</summary>
    public ClusterManifest WithPort(int port) => this with { CoordinatorPort = port, PortIsAuto = false };

    /// <summary>A free TCP port on the coordinator's bind address, for coordinator.port: auto (the listener is closed again: a small window in which another program could take it).</summary>
    public int FreePort()
    {
        var address = System.Net.IPAddress.TryParse(BindAddress, out var ip) ? ip : System.Net.IPAddress.Loopback;
        var listener = new System.Net.Sockets.TcpListener(address, 0);
        listener.Start();
        try { return ((System.Net.IPEndPoint)listener.LocalEndpoint).Port; }
        finally { listener.Stop(); }
    }

    /// <summary>The global rank of a node's local slot: all slots of earlier nodes come first.</summary>
    public int RankOf(int nodeRank, int localSlot) => Nodes.Take(nodeRank).Sum(n => n.Slots) + localSlot;

    public string CoordinatorAddress => $"{(Tls is null ? "http" : "https")}://{CoordinatorHost}:{CoordinatorPort}";
}
