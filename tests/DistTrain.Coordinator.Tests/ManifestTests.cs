using DistTrain.Training.Cluster;
using DistTrain.Training.Config;

namespace DistTrain.Coordinator.Tests;

public class ManifestTests
{
    const string Valid = """
        job: t
        backend: ring
        coordinator: {host: 127.0.0.1, port: 29400}
        token: value:secret
        nodes:
          - host: 127.0.0.1
            cpus: 2
          - host: 10.0.0.2
            cpus: 3
        """;

    static ClusterManifest Load(string yaml)
    {
        using var dir = new TempDir();
        return ManifestLoader.Load(dir.Write("m.yaml", yaml));
    }

    static string Error(string yaml) => Assert.Throws<ConfigException>(() => Load(yaml)).Message;

    [Fact]
    public void RanksFollowNodeOrderThenLocalSlot()
    {
        var m = Load(Valid);
        Assert.Equal(5, m.WorldSize);
        Assert.Equal(0, m.RankOf(0, 0));
        Assert.Equal(1, m.RankOf(0, 1));
        Assert.Equal(2, m.RankOf(1, 0));
        Assert.Equal(4, m.RankOf(1, 2));
        Assert.Equal("127.0.0.1", m.BindAddress);     // loopback unless the manifest says otherwise
        Assert.Equal("secret", ManifestLoader.ReadToken(m));
    }

    [Fact]
    public void BadManifestsNameTheField()
    {
        Assert.Contains("nodes[1].host: '127.0.0.1' is listed twice (also nodes[0])", Error(Valid.Replace("10.0.0.2", "127.0.0.1")));
        Assert.Contains("nodes[0]: give exactly one of gpus: [...] or cpus: N", Error(Valid.Replace("    cpus: 2", "    cpus: 2\n    gpus: [0]")));
        Assert.Contains("backend: 'mpi' is not ring (CPU) or nccl (GPU)", Error(Valid.Replace("backend: ring", "backend: mpi")));
        Assert.Contains("nodes[0]: backend nccl needs gpus", Error(Valid.Replace("backend: ring", "backend: nccl")));
        Assert.Contains("job: missing", Error(Valid.Replace("job: t\n", "")));
        Assert.Contains("coordinator.prot: unknown key", Error(Valid.Replace("port: 29400", "prot: 29400")));
        Assert.Contains("nodes[0].gpus: [0, 0] must list distinct GPU indices", Error(Valid.Replace("backend: ring", "backend: nccl").Replace("cpus: 2", "gpus: [0, 0]").Replace("cpus: 3", "gpus: [1]")));
    }

    [Fact]
    public void AMissingTokenSaysHowToSetIt()
    {
        var m = Load(Valid.Replace("value:secret", "env:DISTTRAIN_TEST_TOKEN_THAT_IS_NOT_SET"));
        var message = Assert.Throws<ConfigException>(() => ManifestLoader.ReadToken(m)).Message;
        Assert.Contains("export DISTTRAIN_TEST_TOKEN_THAT_IS_NOT_SET=", message);
    }
}
