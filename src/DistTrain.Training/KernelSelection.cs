using DistTrain.Cuda;
using DistTrain.Cuda.Ops.AdamW;
using DistTrain.Model.Kernels;
using DistTrain.Training.Config;

namespace DistTrain.Training;

/// <summary>
/// Which implementation of the memory-bound ops and AdamW a run uses (train.kernels), and why:
/// <see cref="Description"/> is the run's opening line. auto takes the fused kernels on a CUDA
/// device when the driver and NVRTC load, else the reference; fused requires them; reference never
/// loads them. A kernel that fails to compile is a bug and fails the run (its message says to use
/// train.kernels=reference meanwhile), even under auto.
/// </summary>
public sealed class KernelSelection : IDisposable
{
    KernelSelection(IKernels kernels, FusedAdamW? adamW, string description) => (Kernels, AdamW, Description) = (kernels, adamW, description);

    public IKernels Kernels { get; }

    /// <summary>The fused optimizer step; null with the reference kernels.</summary>
    public FusedAdamW? AdamW { get; }

    /// <summary>"kernels: fused (train.kernels=auto: ...)" or "kernels: reference (...)".</summary>
    public string Description { get; }

    public static KernelSelection Reference(string why) => new(ReferenceKernels.Instance, null, $"kernels: reference ({why})");

    /// <param name="device">train.device: cpu, cuda or cuda:N</param>
    /// <param name="source">the config file, for error messages</param>
    public static KernelSelection For(KernelChoice choice, string device, string precision, string source)
    {
        if (choice == KernelChoice.Reference)
            return Reference("train.kernels=reference: plain TorchSharp ops");
        string key = choice == KernelChoice.Auto ? "train.kernels=auto" : "train.kernels=fused";
        string? notHere = !device.StartsWith("cuda", StringComparison.Ordinal) ? $"the run is on {device}; fused kernels need CUDA"
            : precision == "fp64" ? "the run is in fp64; fused kernels take fp32 and bf16"
            : null;
        if (notHere is not null)
            return choice == KernelChoice.Auto
                ? Reference($"{key}: {notHere}")
                : throw new ConfigException($"{source}: train.kernels: fused asked for, but {notHere}; use train.kernels=auto or reference");
        int index = device.Contains(':') ? int.Parse(device[(device.IndexOf(':') + 1)..], System.Globalization.CultureInfo.InvariantCulture) : 0;
        CudaKernels fused;
        try
        {
            fused = CudaKernels.Create(index);
        }
        catch (CudaUnavailableException e) when (choice == KernelChoice.Auto)
        {
            return Reference($"{key}: fused kernels unavailable: {e.Message}");
        }
        catch (CudaUnavailableException e)
        {
            throw new ConfigException($"{source}: train.kernels: fused asked for, but the fused kernels cannot run here: {e.Message}");
        }
        var adamW = new FusedAdamW(fused.Device);
        return new KernelSelection(fused, adamW, $"kernels: fused ({key}: cuda:{index}, {fused.Describe()})");
    }

    public void Dispose() => AdamW?.Dispose();
}
