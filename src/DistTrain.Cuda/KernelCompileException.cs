namespace DistTrain.Cuda;

/// <summary>NVRTC refused a kernel source: the message carries the source name, the options and NVRTC's log.</summary>
public sealed class KernelCompileException(string message) : Exception(message);
