using DistTrain.Training.Cluster;
using DistTrain.Training.Config;

namespace DistTrain.Coordinator.Tests;

/// <summary>coordinator.port: auto — one node only; launch picks the port.</summary>
public class AutoPortManifestTests
{
    static string Manifest(string port, int nodes) => $$"""
        job: t
        backend: ring
        coordinator: {host: 127.0.0.1, port: {{port}}}
        token: value:secret
        nodes:
        {{string.Join("\n", Enumerable.Range(0, nodes).Select(i => $"  - {{host: 10.0.0.{i + 1}, cpus: 2}}"))}}
        """;

    static ClusterManifest Load(string yaml)
    {
        using var dir = new TempDir();
        return ManifestLoader.Load(dir.Write("m.yaml", yaml));
    }

    [Fact]
    public void AutoOnOneNodeIsAcceptedAndAFreePortReplacesIt()
    {
        var m = Load(Manifest("auto", 1));
        Assert.True(m.PortIsAuto);
        int port = m.FreePort();
        Assert.InRange(port, 1, 65535);
        var picked = m.WithPort(port);
        Assert.False(picked.PortIsAuto);
        Assert.Equal($"http://127.0.0.1:{port}", picked.CoordinatorAddress);
        Assert.False(Load(Manifest("29400", 1)).PortIsAuto);
    }

    [Fact]
    public void AutoInAMultiNodeManifestIsRefusedNamingTheField()
    {
        var e = Assert.Throws<ConfigException>(() => Load(Manifest("auto", 2)));
        Assert.EndsWith("m.yaml: coordinator.port: auto picks a free port on one host, and this manifest lists 2 nodes whose workers must know the port in advance; " +
            "set coordinator.port to a number (in Slurm, derive it from the job id)", e.Message);
        e = Assert.Throws<ConfigException>(() => Load(Manifest("automatic", 1)));
        Assert.EndsWith("m.yaml: coordinator.port: 'automatic' is not a TCP port; give a number in 1..65535, or auto (one node: a free port)", e.Message);
    }
}
