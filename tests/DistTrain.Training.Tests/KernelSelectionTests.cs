using DistTrain.Cuda;
using DistTrain.Model.Kernels;
using DistTrain.Training.Config;

namespace DistTrain.Training.Tests;

/// <summary>train.kernels on a host without CUDA (CI): what runs, what is refused, and the reasons given.</summary>
public class KernelSelectionTests
{
    const string Valid = """
        model:
          size: tiny
          arch: muddformer
        data:
          train: corpus/kjv/train
        train:
          steps: 2
        """;

    static TrainConfig Load(params string[] overrides)
    {
        using var dir = new TempDir();
        var file = dir.File("c.yaml", Valid.Replace("corpus/kjv", Path.Combine(Repo.Root, "configs", "corpus", "kjv")));
        return TrainConfigLoader.Load(file, overrides);
    }

    [Fact]
    public void KernelsDefaultToAutoAndTakeTheThreeChoices()
    {
        Assert.Equal(KernelChoice.Auto, Load().Train.Kernels);
        Assert.Equal(KernelChoice.Fused, Load("train.kernels=fused", "train.device=cuda").Train.Kernels);
        Assert.Equal(KernelChoice.Reference, Load("train.kernels=Reference").Train.Kernels);
    }

    [Fact]
    public void AnUnknownChoiceNamesTheKeyAndTheChoices()
    {
        var e = Assert.Throws<ConfigException>(() => Load("train.kernels=triton"));
        Assert.Contains("train.kernels: 'triton' is not one of: auto, fused, reference", e.Message);
    }

    [Fact]
    public void FusedOnTheCpuIsRefusedWithWhatToChange()
    {
        var e = Assert.Throws<ConfigException>(() => Load("train.kernels=fused"));
        Assert.Contains("train.kernels: fused kernels run on CUDA only and train.device is cpu", e.Message);
        Assert.Contains("train.kernels=auto", e.Message);
        var fp64 = Assert.Throws<ConfigException>(() => Load("train.kernels=fused", "train.device=cuda", "train.precision=fp64"));
        Assert.Contains("not fp64", fp64.Message);
    }

    [Fact]
    public void AutoOnTheCpuRunsTheReferenceAndSaysWhy()
    {
        using var selection = KernelSelection.For(KernelChoice.Auto, "cpu", "fp32", "c.yaml");
        Assert.Same(ReferenceKernels.Instance, selection.Kernels);
        Assert.Null(selection.AdamW);
        Assert.Equal("kernels: reference (train.kernels=auto: the run is on cpu; fused kernels need CUDA)", selection.Description);
    }

    [Fact]
    public void AutoOnCudaWithoutTheLibrariesFallsBackAndListsWhereItLooked()
    {
        if (CudaLibrariesPresent()) return;   // a GPU host: kernel-test covers it
        using var selection = KernelSelection.For(KernelChoice.Auto, "cuda:0", "bf16", "c.yaml");
        Assert.Same(ReferenceKernels.Instance, selection.Kernels);
        Assert.Contains("train.kernels=auto: fused kernels unavailable: the CUDA driver library was not found; tried:", selection.Description);
        Assert.Contains("libcuda.so.1", selection.Description);
    }

    [Fact]
    public void FusedOnCudaWithoutTheLibrariesFailsWithTheReason()
    {
        if (CudaLibrariesPresent()) return;
        var e = Assert.Throws<ConfigException>(() => KernelSelection.For(KernelChoice.Fused, "cuda", "bf16", "c.yaml"));
        Assert.StartsWith("c.yaml: train.kernels: fused asked for, but the fused kernels cannot run here: the CUDA driver library was not found", e.Message);
    }

    [Fact]
    public void ReferenceNeverLoadsCuda()
    {
        using var selection = KernelSelection.For(KernelChoice.Reference, "cuda:3", "bf16", "c.yaml");
        Assert.Equal("kernels: reference (train.kernels=reference: plain TorchSharp ops)", selection.Description);
    }

    [Fact]
    public void TheTrainerSetsTheReferenceOnTheModelAndTheOptimizerOnTheCpu()
    {
        using var runs = new TempDir();
        using var trainer = new Trainer(Load($"train.run_dir={runs.Path}", "train.eval_interval=0", "train.eval_batches=0", "train.micro_batch=2", "train.seq_len=32"));
        Assert.Same(ReferenceKernels.Instance, trainer.Model.Kernels);
        Assert.Equal("reference", trainer.Optimizer.Implementation);
        var seen = new List<string>();
        trainer.Run(new KernelLines(seen));
        Assert.Equal(["kernels: reference (train.kernels=auto: the run is on cpu; fused kernels need CUDA)"], seen);
    }

    sealed class KernelLines(List<string> seen) : ITrainingObserver
    {
        public void OnKernels(string description) => seen.Add(description);
    }

    static bool CudaLibrariesPresent()
    {
        try
        {
            CudaDevice.Get(0);
            return true;
        }
        catch (CudaUnavailableException)
        {
            return false;
        }
    }
}
