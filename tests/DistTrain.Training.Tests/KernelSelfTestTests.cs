using DistTrain.Model.Kernels;
using DistTrain.Training.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training.Tests;

/// <summary>
/// kernel-test's mix, average, add-norm and whole-model checks run on the CPU with the reference in place of the
/// fused kernels: the code the lead runs on the GPU works (shapes, autograd, flat buffers, config), and
/// a reference compared with itself passes every row. The kernels themselves: tests/cuda-emulation, make test-gpu.
/// </summary>
public class KernelSelfTestTests
{
    static readonly Device Cpu = new(DeviceType.CPU);

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void TheMixAverageAndChainChecksRunAndPassForTheReference(ScalarType dtype)
    {
        var rows = KernelSelfTest.Mix(ReferenceKernels.Instance, Cpu, dtype, (2, 3, 7, 4, 3))
            .Concat(KernelSelfTest.Average(ReferenceKernels.Instance, Cpu, dtype, (1, 3, 16, 5)))
            .Concat(KernelSelfTest.MixChain(ReferenceKernels.Instance, Cpu, dtype, (1, 3, 7, 4))).ToList();
        Assert.Equal(["streams", "dh", "ddw", "dbias", "dbias+=", "average", "dh", "dalpha", "out", "dh", "ddw", "dbias"], rows.Select(r => r.Output));
        Assert.All(rows, r => Assert.True(r.Pass && r.Rel == r.ReferenceRel, r.Row()));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TheQkvCheckRunsAndPassesForTheReference(bool normed)
    {
        var rows = KernelSelfTest.Qkv(ReferenceKernels.Instance, Cpu, (2, 5, 2, 32, 48), normed);
        string[] outputs = ["q", "k", "v", "dx", "dw+="];
        Assert.Equal(normed ? [.. outputs, "dnorms"] : outputs, rows.Select(r => r.Output));
        Assert.All(rows, r => Assert.True(r.Pass && r.Rel == r.ReferenceRel, r.Row()));
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void TheAddNormChecksRunAndPassForTheReferenceInEveryCase(ScalarType dtype)
    {
        var rows = new List<KernelCheck>();
        foreach (var c in Enum.GetValues<KernelSelfTest.AddNormCase>())
            rows.AddRange(KernelSelfTest.AddRmsNorm(ReferenceKernels.Instance, Cpu, dtype, [2, 3, 12], scaled: true, c));
        rows.AddRange(KernelSelfTest.AddRmsNorm(ReferenceKernels.Instance, Cpu, dtype, [5, 7], scaled: false, KernelSelfTest.AddNormCase.Plain));
        string[] scaled = ["sum", "y", "da", "db", "dw", "dw+="];
        Assert.Equal([.. scaled, .. scaled, .. scaled, .. scaled, "sum", "y", "da", "db"], rows.Select(r => r.Output));
        Assert.Equal(["2x3x12", "2x3x12+1", "2x3x12t", "2x3x12n", "5x7"], rows.Select(r => r.Shape).Distinct());
        Assert.All(rows, r => Assert.True(r.Pass && r.Rel == r.ReferenceRel, r.Row()));
    }

    [Fact]
    public void TheWholeModelCheckCoversTheLossAndEveryParameterAndPassesForTheReference()
    {
        var lines = new List<string>();
        var rows = KernelSelfTest.WholeModel(ReferenceKernels.Instance, Cpu, Repo.Config("tiny-muddformer.yaml"), lines.Add);
        Assert.Empty(lines);   // the config was found
        Assert.Equal("loss", rows[0].Output);
        Assert.Contains(rows, r => r.Output == "dense_bs.2");
        Assert.Contains(rows, r => r.Output == "dynamic_dense.0.w1.weight");
        // every parameter twice: the exact fp32 check and the bf16 one
        Assert.Equal(rows.Count(r => r.Dtype == "bf16" && !r.Output.StartsWith("loss") && !r.Output.StartsWith("grads (")), rows.Count(r => r.Dtype == "fp32" && r.Output != "loss"));
        Assert.Contains(rows, r => r.Dtype == "fp32" && r.Output == "norm.weight");
        Assert.Equal(["loss (block)", "grads (block, worst)", "loss (mudd)", "grads (mudd, worst)"], rows[^4..].Select(r => r.Output));
        Assert.All(rows, r => Assert.True(r.Pass, r.Row()));
        Assert.All(rows.Skip(1).SkipLast(4), r => Assert.True(r.Rel == r.ReferenceRel, r.Row()));   // the same bf16 computation twice
    }
}
