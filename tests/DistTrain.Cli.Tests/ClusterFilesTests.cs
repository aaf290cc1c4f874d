using System.Collections.Concurrent;
using System.Text.RegularExpressions;
using YamlDotNet.RepresentationModel;

namespace DistTrain.Cli.Tests;

/// <summary>
/// Every file in cluster/ against the real CLI: each `disttrain SUBCOMMAND --option` it uses is an option of that
/// subcommand (`disttrain SUBCOMMAND --help`, the parser's own list), each manifest and config loads with the
/// project's loaders and each --set key exists (the real `disttrain launch` with an out-of-range --node-rank stops
/// after loading and checking them, before it starts anything), each DISTTRAIN_* / TORCH_* / OTEL_* variable is read
/// by DistTrain or is the script's own and documented, and the Kubernetes objects refer to each other consistently.
/// </summary>
public partial class ClusterFilesTests
{
    static readonly TimeSpan Limit = TimeSpan.FromMinutes(2);
    static readonly string Cluster = Path.Combine(Disttrain.RepoRoot, "cluster");
    static readonly ConcurrentDictionary<string, HashSet<string>> HelpCache = new();

    [GeneratedRegex(@"(?<![\w-])(--[a-z][a-z0-9-]*)")] private static partial Regex LongOption();
    [GeneratedRegex(@"\b((?:DISTTRAIN|TORCH|OTEL)_[A-Z0-9_]+)\b")] private static partial Regex DistTrainVariable();
    [GeneratedRegex(@"^#\s+(DISTTRAIN_[A-Z_]+|TORCH_LIB)\s", RegexOptions.Multiline)] private static partial Regex SbatchDocumentedVariable();
    [GeneratedRegex(@"(?:^|[\s""'(`])disttrain[ \t]+([a-z][a-z-]+)(?:[ \t]+([a-z][a-z-]+))?([^\n#`]*)")] private static partial Regex DisttrainCommand();
    [GeneratedRegex(@"--set\s+([a-z_]+\.[a-z_]+)=(\S+)")] private static partial Regex SetOption();
    [GeneratedRegex(@"\$\(([A-Z_]+)\)")] private static partial Regex KubernetesVariable();

    [Fact]
    public void EveryDistTrainManifestInClusterLoadsAndLaunchAcceptsIt()
    {
        var manifests = Directory.GetFiles(Cluster, "*.yaml").Where(f => !File.ReadAllText(f).Contains("apiVersion:")).Order().ToList();
        Assert.True(manifests.Count >= 6, string.Join(", ", manifests));
        foreach (var manifest in manifests)
        {
            int nodes = YamlFile(manifest)["nodes"].Seq().Children.Count;
            ExpectLoaded(["--manifest", manifest, "--config", Path.Combine(Disttrain.RepoRoot, "configs", "tiny-muddformer.yaml")], nodes);
        }
    }

    [Fact]
    public void EveryDisttrainCommandWrittenInAClusterFileUsesOptionsOfThatCommand()
    {
        int checkedCommands = 0;
        foreach (var file in Directory.GetFiles(Cluster))
            foreach (Match m in DisttrainCommand().Matches(File.ReadAllText(file)))
            {
                var sub = new List<string> { m.Groups[1].Value };
                if (m.Groups[2].Success && Help(sub[0]).Contains("subcommand:" + m.Groups[2].Value)) sub.Add(m.Groups[2].Value);
                else if (m.Groups[2].Success) { checkedCommands += CheckOptions(file, sub, m.Groups[2].Value + m.Groups[3].Value); continue; }
                checkedCommands += CheckOptions(file, sub, m.Groups[3].Value);
            }
        Assert.True(checkedCommands >= 6, $"only {checkedCommands} disttrain commands found in cluster/");
    }

    int CheckOptions(string file, List<string> sub, string rest)
    {
        var known = Help([.. sub]);
        Assert.True(known.Count > 0, $"{Path.GetFileName(file)}: 'disttrain {string.Join(' ', sub)}' is not a command of the CLI");
        foreach (Match o in LongOption().Matches(rest))
            Assert.True(known.Contains(o.Groups[1].Value), $"{Path.GetFileName(file)}: 'disttrain {string.Join(' ', sub)} {o.Groups[1].Value}': the CLI has no such option (it has {string.Join(", ", known.Where(k => k.StartsWith("--")))})");
        return 1;
    }

    [Fact]
    public void TheSbatchTemplatesLaunchLineAndExamplesAreAcceptedByTheCli()
    {
        var script = File.ReadAllText(Path.Combine(Cluster, "slurm.sbatch"));
        // the launch line the script builds: args=(launch --manifest ... --config ... "${extra[@]}" "$@"), plus --node-rank in srun's task
        var launch = Regex.Match(script, @"args=\((launch [^)]*)\)").Groups[1].Value;
        var task = Regex.Match(script, @"bash -c '([^']*)'").Groups[1].Value;
        Assert.StartsWith("launch --manifest \"$manifest\" --config \"$config\"", launch);
        Assert.Contains("--node-rank \"$SLURM_NODEID\"", task);
        foreach (Match o in LongOption().Matches(launch + " " + task))
            Assert.Contains(o.Groups[1].Value, Help("launch"));

        // the --set keys of the header's examples (script arguments and DISTTRAIN_ARGS) load with the real config loader
        var sets = SetOption().Matches(script).Select(m => $"{m.Groups[1].Value}={m.Groups[2].Value.Trim('"')}").Distinct().ToList();
        Assert.NotEmpty(sets);
        ExpectLoaded(["--manifest", Path.Combine(Cluster, "local-cpu.yaml"), "--config", Path.Combine(Disttrain.RepoRoot, "configs", "tiny-muddformer.yaml"),
            .. sets.SelectMany(s => new[] { "--set", s })], 1);

        // the configs it names exist (the default and the CPU example)
        foreach (Match c in Regex.Matches(script, @"configs/[\w.-]+\.yaml"))
            Assert.True(File.Exists(Path.Combine(Disttrain.RepoRoot, c.Value)), $"slurm.sbatch names {c.Value}, which does not exist");
    }

    [Fact]
    public void EveryVariableAClusterFileUsesIsReadByDistTrainOrDocumentedAsTheScriptsOwn()
    {
        var read = SourceVariables();
        var doc = File.ReadAllText(Path.Combine(Disttrain.RepoRoot, "docs", "cluster.md"));
        var script = File.ReadAllText(Path.Combine(Cluster, "slurm.sbatch"));
        var own = SbatchDocumentedVariable().Matches(script).Select(m => m.Groups[1].Value).ToHashSet();
        Assert.Contains("DISTTRAIN_BIN", own);
        foreach (var v in own)
        {
            Assert.True(doc.Contains(v), $"slurm.sbatch's variable {v} is not in docs/cluster.md");
            Assert.True(Regex.IsMatch(script, $@"\${{?{v}\b"), $"slurm.sbatch documents {v} but never reads it");
        }
        foreach (var file in Directory.GetFiles(Cluster))
            foreach (var v in DistTrainVariable().Matches(File.ReadAllText(file)).Select(m => m.Groups[1].Value).Distinct())
                Assert.True(read.Contains(v) || (file.EndsWith("slurm.sbatch") && own.Contains(v)),
                    $"{Path.GetFileName(file)} uses {v}, which DistTrain never reads{(file.EndsWith("slurm.sbatch") ? " and the script does not document as its own" : "")}");
    }

    [Fact]
    public void TheKubernetesObjectsReferToEachOtherAndLaunchAcceptsTheJobsCommand()
    {
        var docs = new YamlStream();
        docs.Load(new StringReader(File.ReadAllText(Path.Combine(Cluster, "kubernetes-indexed-job.yaml"))));
        var objects = docs.Documents.Select(d => (YamlMappingNode)d.RootNode).ToDictionary(o => o.Str("kind"));
        Assert.Equal(["ConfigMap", "Job", "PersistentVolumeClaim", "Secret", "Service"], objects.Keys.Order());
        string Name(string kind) => objects[kind]["metadata"].Map().Str("name");

        var job = objects["Job"];
        var jobSpec = job["spec"].Map();
        var pod = jobSpec["template"].Map()["spec"].Map();
        var container = pod["containers"].Seq().Children.Single().Map();
        var env = container["env"].Seq().Children.Select(e => e.Map()).ToDictionary(e => e.Str("name"));
        Assert.Equal("Indexed", jobSpec.Str("completionMode"));

        // Secret: the one the token variable names, with its key
        var secretRef = env["DISTTRAIN_JOB_TOKEN"]["valueFrom"].Map()["secretKeyRef"].Map();
        Assert.Equal(Name("Secret"), secretRef.Str("name"));
        Assert.True(objects["Secret"]["stringData"].Map().Children.ContainsKey(secretRef.Str("key")), "the Secret has no key " + secretRef.Str("key"));

        // Service: headless, the pods' subdomain, selecting the Job's pods
        var service = objects["Service"]["spec"].Map();
        Assert.Equal("None", service.Str("clusterIP"));
        Assert.Equal(Name("Service"), pod.Str("subdomain"));
        Assert.Equal(Name("Job"), service["selector"].Map().Str("job-name"));

        // volumes: the ConfigMap and the claim that exist here
        var volumes = pod["volumes"].Seq().Children.Select(v => v.Map()).ToDictionary(v => v.Str("name"));
        var mounts = container["volumeMounts"].Seq().Children.Select(v => v.Map()).ToDictionary(v => v.Str("name"), v => v.Str("mountPath"));
        var configMapVolume = volumes.Single(v => v.Value.Children.ContainsKey("configMap"));
        Assert.Equal(Name("ConfigMap"), configMapVolume.Value["configMap"].Map().Str("name"));
        Assert.Equal(Name("PersistentVolumeClaim"), volumes.Single(v => v.Value.Children.ContainsKey("persistentVolumeClaim")).Value["persistentVolumeClaim"].Map().Str("claimName"));
        string mounted = mounts[configMapVolume.Key];

        // the manifest: one node per pod (disttrain-K.disttrain), the coordinator on the Service's port, GPUs = the pod's limit
        var data = objects["ConfigMap"]["data"].Map();
        var manifest = YamlText(data.Str("manifest.yaml"));
        var nodes = manifest["nodes"].Seq().Children.Select(n => n.Map()).ToList();
        Assert.Equal(int.Parse(jobSpec.Str("completions")), nodes.Count);
        Assert.Equal(int.Parse(jobSpec.Str("parallelism")), nodes.Count);
        for (int i = 0; i < nodes.Count; i++)
        {
            Assert.Equal($"{Name("Job")}-{i}.{Name("Service")}", nodes[i].Str("host"));
            Assert.Equal(int.Parse(container["resources"].Map()["limits"].Map().Str("nvidia.com/gpu")), nodes[i]["gpus"].Seq().Children.Count);
        }
        var coordinator = manifest["coordinator"].Map();
        Assert.Equal(nodes[int.Parse(coordinator.Str("node"))].Str("host"), coordinator.Str("host"));
        Assert.Equal("0.0.0.0", coordinator.Str("bind"));
        Assert.Equal(coordinator.Str("port"), service["ports"].Seq().Children.Single().Map().Str("port"));
        Assert.Equal("env:DISTTRAIN_JOB_TOKEN", manifest.Str("token"));

        // the command: the image's binary (cluster/Dockerfile puts the bundle at /opt/disttrain), every $(VAR) defined
        var command = container["command"].Seq().Children.Select(c => ((YamlScalarNode)c).Value!).ToList();
        var args = container["args"].Seq().Children.Select(c => ((YamlScalarNode)c).Value!).ToList();
        Assert.Equal(["/opt/disttrain/disttrain"], command);
        foreach (var v in args.SelectMany(a => KubernetesVariable().Matches(a)).Select(m => m.Groups[1].Value))
            Assert.True(env.ContainsKey(v), $"the Job's args use $({v}), which its env does not define");
        Assert.Contains("batch.kubernetes.io/job-completion-index", env["NODE_RANK"]["valueFrom"].Map()["fieldRef"].Map().Str("fieldPath"));

        // run that command with the real CLI: the ConfigMap's files in a folder, the image's configs from the repository
        using var dir = new TempFolder();
        foreach (var (key, value) in data.Children)
            File.WriteAllText(Path.Combine(dir.Path, ((YamlScalarNode)key).Value!), ((YamlScalarNode)value).Value!.Replace("/opt/disttrain/configs", Path.Combine(Disttrain.RepoRoot, "configs")));
        Assert.Equal("launch", args[0]);
        var local = args.Skip(1).Select(a => a.Replace(mounted, dir.Path).Replace("$(NODE_RANK)", "99")).ToArray();
        ExpectLoaded(local, nodes.Count);
    }

    [Fact]
    public void TheDockerfileBuildsFromTheBundleWhichCarriesTheConfigs()
    {
        var dockerfile = File.ReadAllText(Path.Combine(Cluster, "Dockerfile"));
        var makefile = File.ReadAllText(Path.Combine(Disttrain.RepoRoot, "Makefile"));
        var bundle = Regex.Match(makefile, @"^BUNDLE\s*:=\s*(\S+)", RegexOptions.Multiline).Groups[1].Value;
        Assert.Equal("artifacts/disttrain-linux-x64.tar.xz", bundle);
        Assert.Matches($@"(?m)^ADD {Regex.Escape(bundle)} /opt/$", dockerfile);       // unpacks to /opt/disttrain (the bundle's folder)
        Assert.Contains("-o artifacts/bundle/disttrain", makefile);
        Assert.Contains("cp -r configs artifacts/bundle/disttrain/configs", makefile);   // so /opt/disttrain/configs exists
        Assert.Matches(@"(?m)^ARG BASE=pytorch/pytorch:[\w.-]*cuda[\w.-]*$", dockerfile);
        // BuildKit's context filter next to the Dockerfile: everything out but the bundle
        var ignore = File.ReadAllLines(Path.Combine(Cluster, "Dockerfile.dockerignore")).Where(l => l.Length > 0 && !l.StartsWith('#')).ToList();
        Assert.Equal(["*", "!" + bundle], ignore);
        // the libraries DistTrain looks for: libtorch (TORCH_LIB), NCCL and NVRTC on the loader's path
        Assert.Matches(@"TORCH_LIB=/opt/torch/lib", dockerfile);
        Assert.Matches(@"LD_LIBRARY_PATH=/opt/torch/lib:/opt/torch/nccl:/opt/torch/cu13:/opt/torch/cuda_nvrtc(\s|$)", dockerfile);
        foreach (var config in Regex.Matches(dockerfile, @"/opt/disttrain/(configs/[\w.-]+\.yaml)").Select(m => m.Groups[1].Value))
            Assert.True(File.Exists(Path.Combine(Disttrain.RepoRoot, config)), $"the Dockerfile uses {config}, which the bundle would not carry");
    }

    /// <summary>`disttrain launch ARGS --node-rank 99` exits 2 on the node rank: the parser took every option, the manifest, the config and its --set keys loaded, the world size splits the batch, the token is there.</summary>
    static void ExpectLoaded(string[] launchArgs, int nodes)
    {
        string[] args = ["launch", .. launchArgs.Where((a, i) => a != "--node-rank" && (i == 0 || launchArgs[i - 1] != "--node-rank")), "--node-rank", "99"];
        var (code, output) = Disttrain.Run(Limit, args, ("DISTTRAIN_JOB_TOKEN", "cluster-files-test"));
        Assert.True(code == 2 && output.Contains($"--node-rank 99 is not one of the {nodes} nodes"), $"disttrain {string.Join(' ', args)}: exit {code}\n{output}");
    }

    /// <summary>Options of `disttrain SUB... --help` (empty: not a command); subcommands as "subcommand:NAME".</summary>
    static HashSet<string> Help(params string[] sub) => HelpCache.GetOrAdd(string.Join(' ', sub), _ =>
    {
        var (code, output) = Disttrain.Run(Limit, [.. sub, "--help"]);
        var known = new HashSet<string>();
        if (code != 0 || !output.Contains("Usage:")) return known;
        string section = "";
        foreach (var line in output.Split('\n'))
        {
            if (line.StartsWith("Options:")) section = "options";
            else if (line.StartsWith("Commands:")) section = "commands";
            else if (!line.StartsWith(' ')) section = "";
            else if (section == "options") known.UnionWith(LongOption().Matches(line.Split("  ", 2, StringSplitOptions.RemoveEmptyEntries)[0]).Select(m => m.Groups[1].Value));
            else if (section == "commands") known.Add("subcommand:" + line.Trim().Split(' ')[0]);
        }
        return known;
    });

    /// <summary>Every DISTTRAIN_* / TORCH_* / OTEL_* name that src/ mentions as a string (what DistTrain reads).</summary>
    static HashSet<string> SourceVariables() =>
        Directory.GetFiles(Path.Combine(Disttrain.RepoRoot, "src"), "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}"))
            .SelectMany(f => Regex.Matches(File.ReadAllText(f), @"""((?:DISTTRAIN|TORCH|OTEL)_[A-Z0-9_]+)""").Select(m => m.Groups[1].Value))
            .Concat(OtelStandardVariables).ToHashSet();

    /// <summary>The OpenTelemetry SDK reads the standard OTEL_* variables itself (docs/observability.md).</summary>
    static readonly string[] OtelStandardVariables = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"];

    static YamlMappingNode YamlFile(string path) => YamlText(File.ReadAllText(path));

    static YamlMappingNode YamlText(string text)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(text));
        return (YamlMappingNode)stream.Documents.Single().RootNode;
    }
}

static class YamlNodes
{
    public static YamlMappingNode Map(this YamlNode node) => (YamlMappingNode)node;
    public static YamlSequenceNode Seq(this YamlNode node) => (YamlSequenceNode)node;
    public static string Str(this YamlMappingNode node, string key) => ((YamlScalarNode)node[key]).Value ?? "";
}
