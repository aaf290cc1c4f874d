using System.Runtime.InteropServices;

namespace DistTrain.Cuda.Tests;

/// <summary>Which errors end the process (an elastic job then replaces it like a crash) and which a process survives.</summary>
public class PoisonedContextTests
{
    [Theory]
    [InlineData(700, true)]    // CUDA_ERROR_ILLEGAL_ADDRESS
    [InlineData(719, true)]    // CUDA_ERROR_LAUNCH_FAILED
    [InlineData(2, false)]     // CUDA_ERROR_OUT_OF_MEMORY: the context survives it
    [InlineData(209, false)]   // CUDA_ERROR_NO_BINARY_FOR_GPU
    public void OurKernelsStickyErrorsPoisonTheProcess(int code, bool poisoned) =>
        Assert.Equal(poisoned, CudaException.PoisonsProcess(new CudaException(code, $"cuLaunchKernel failed ({code})")));

    [Fact]
    public void ALibtorchOpsIllegalAddressPoisonsTheProcessAndAnOutOfMemoryDoesNot()
    {
        Assert.True(CudaException.PoisonsProcess(new ExternalException("CUDA error: an illegal memory access was encountered\nCompile with TORCH_USE_CUDA_DSA")));
        Assert.False(CudaException.PoisonsProcess(new ExternalException("CUDA out of memory. Tried to allocate 2.00 GiB")));
        Assert.False(CudaException.PoisonsProcess(new InvalidOperationException("train.micro_batch: 3 does not split")));
    }
}
