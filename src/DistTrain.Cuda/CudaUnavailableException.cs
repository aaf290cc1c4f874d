namespace DistTrain.Cuda;

/// <summary>The fused kernels cannot run here: no CUDA driver, no NVRTC, or no such device. train.kernels=auto falls back to the reference ops on it.</summary>
public sealed class CudaUnavailableException(string message, Exception? inner = null) : Exception(message, inner);
