using DistTrain.Training.Config;

namespace DistTrain.Training.Cluster;

/// <summary>Reads and checks a cluster manifest (YAML); every problem names the file and the field.</summary>
public static class ManifestLoader
{
    public static ClusterManifest Load(string path)
    {
        var root = new ConfigSection(path, "", YamlTree.Load(path, "cluster manifest not found; pass --manifest with a path such as cluster/local-cpu.yaml"));
        var job = root.String("job", "");
        var backend = root.String("backend", "ring");
        var coordinator = root.Section("coordinator");
        var host = coordinator.String("host", "127.0.0.1");
        var portText = coordinator.String("port", "29400");
        bool autoPort = portText == "auto";
        var port = autoPort ? 0 : int.TryParse(portText, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var p) ? p
            : throw new ConfigException($"{coordinator.Where("port")}: '{portText}' is not a TCP port; give a number in 1..65535, or auto (one node: a free port)");
        var bind = coordinator.String("bind", "127.0.0.1");
        var coordinatorNode = coordinator.Int("node", 0);
        coordinator.EnsureConsumed();
        var token = root.String("token", "env:DISTTRAIN_JOB_TOKEN");
        var heartbeat = root.Section("heartbeat");
        var interval = heartbeat.Double("interval_s", 1.0);
        var timeout = heartbeat.Double("timeout_s", 10.0);
        var rendezvous = heartbeat.Double("rendezvous_timeout_s", 300.0);
        var connect = heartbeat.Double("connect_timeout_s", 60.0);
        heartbeat.EnsureConsumed();
        var tls = root.Has("tls") ? ReadTls(path, root.Section("tls")) : null;
        var nodes = ReadNodes(path, root);
        root.EnsureConsumed();

        void Require(bool ok, string field, string message) { if (!ok) throw new ConfigException($"{path}: {field}: {message}"); }
        Require(job.Length > 0, "job", "missing; name the job (it keeps workers of other jobs out)");
        Require(backend is "ring" or "nccl", "backend", $"'{backend}' is not ring (CPU) or nccl (GPU)");
        Require(autoPort || port is > 0 and < 65536, "coordinator.port", $"{port} is not a TCP port; give a number in 1..65535, or auto (one node: a free port)");
        Require(!autoPort || nodes.Count == 1, "coordinator.port",
            $"auto picks a free port on one host, and this manifest lists {nodes.Count} nodes whose workers must know the port in advance; set coordinator.port to a number (in Slurm, derive it from the job id)");
        Require(coordinatorNode >= 0 && coordinatorNode < nodes.Count, "coordinator.node", $"{coordinatorNode} is not one of the {nodes.Count} nodes (0-based)");
        Require(interval > 0 && timeout > interval, "heartbeat.timeout_s", $"must exceed heartbeat.interval_s ({interval})");
        Require(token.StartsWith("env:") || token.StartsWith("file:") || token.StartsWith("value:"), "token", $"'{token}' must be env:VARIABLE, file:PATH or value:SECRET");
        for (int i = 0; i < nodes.Count; i++)
        {
            var n = nodes[i];
            Require(backend != "nccl" || n.Gpus.Count > 0, $"nodes[{i}]", "backend nccl needs gpus: [...] on every node");
            Require(backend != "ring" || n.Gpus.Count == 0, $"nodes[{i}].gpus", "backend ring runs on CPU slots; use cpus: N, or backend: nccl");
        }
        Require(connect > 0, "heartbeat.connect_timeout_s", "must be positive (how long a worker waits for the coordinator to come up)");
        return new ClusterManifest(path, job, backend, host, port, bind, coordinatorNode, token, interval, timeout, rendezvous, connect, tls, nodes) { PortIsAuto = autoPort };
    }

    static TlsSpec ReadTls(string path, ConfigSection t)
    {
        string? File(string key) => t.Has(key) && t.String(key, "") is { Length: > 0 } p ? Resolve(path, p) : null;
        var (cert, key, ca, clientCert, clientKey) = (File("cert"), File("key"), File("ca"), File("client_cert"), File("client_key"));
        t.EnsureConsumed();
        if (cert is null || key is null)
            throw new ConfigException($"{path}: tls: give both cert and key (the coordinator's certificate and its private key, PEM), or remove the tls section");
        if ((clientCert is null) != (clientKey is null))
            throw new ConfigException($"{path}: tls: give both client_cert and client_key (the certificate and key workers present, PEM) for mutual TLS, or neither");
        if (clientCert is not null && ca is null)
            throw new ConfigException($"{path}: tls.ca: mutual TLS (tls.client_cert) needs the CA that signed the workers' certificates; the coordinator accepts only workers it signed");
        return new TlsSpec(cert, key, ca, clientCert, clientKey);
    }

    static List<NodeSpec> ReadNodes(string path, ConfigSection root)
    {
        if (!root.Has("nodes")) throw new ConfigException($"{path}: nodes: missing; list the hosts, each with gpus: [0, 1, ...] or cpus: N");
        var raw = root.RawList("nodes");
        var nodes = new List<NodeSpec>();
        var hosts = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        for (int i = 0; i < raw.Count; i++)
        {
            var n = raw[i];
            var host = n.String("host", "");
            if (host.Length == 0) throw new ConfigException($"{path}: nodes[{i}].host: missing");
            if (hosts.TryGetValue(host, out var first))
                throw new ConfigException($"{path}: nodes[{i}].host: '{host}' is listed twice (also nodes[{first}]); list each host once with all its GPUs or slots");
            hosts[host] = i;
            var gpus = n.IntList("gpus");
            int cpus = n.Int("cpus", 0);
            n.EnsureConsumed();
            if ((gpus.Count > 0) == (cpus > 0))
                throw new ConfigException($"{path}: nodes[{i}]: give exactly one of gpus: [...] or cpus: N");
            if (gpus.Distinct().Count() != gpus.Count || gpus.Any(g => g < 0))
                throw new ConfigException($"{path}: nodes[{i}].gpus: [{string.Join(", ", gpus)}] must list distinct GPU indices >= 0");
            nodes.Add(new NodeSpec(host, gpus, cpus));
        }
        if (nodes.Count == 0) throw new ConfigException($"{path}: nodes: empty; list at least one host");
        return nodes;
    }

    static string Resolve(string manifest, string p) =>
        p.Length == 0 || Path.IsPathRooted(p) ? p : Path.GetFullPath(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(manifest))!, p));

    /// <summary>The job token named by the manifest's token source (env:VAR, file:PATH, value:SECRET).</summary>
    public static string ReadToken(ClusterManifest m)
    {
        var source = m.TokenSource;
        string? token = source switch
        {
            _ when source.StartsWith("env:") => Environment.GetEnvironmentVariable(source[4..]),
            _ when source.StartsWith("file:") => File.Exists(Resolve(m.Source, source[5..])) ? File.ReadAllText(Resolve(m.Source, source[5..])).Trim() : null,
            _ => source[6..],
        };
        if (string.IsNullOrEmpty(token))
            throw new ConfigException($"{m.Source}: token: {source} gives no token; set it (for example export {(source.StartsWith("env:") ? source[4..] : "DISTTRAIN_JOB_TOKEN")}=$(openssl rand -hex 16)) on every node");
        return token;
    }
}
