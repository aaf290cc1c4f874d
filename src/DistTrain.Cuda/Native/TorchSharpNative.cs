using System.Runtime.InteropServices;

namespace DistTrain.Cuda.Native;

// Hand-written because TorchSharp does not expose a tensor's device address; libLibTorchSharp.so
// exports it (the NCCL communicator uses the same entry point).
internal static partial class TorchSharpNative
{
    internal const string Library = "LibTorchSharp";

    /// <summary><c>tensor->data_ptr()</c>: the address of the first element (storage offset included); null on error.</summary>
    [LibraryImport(Library)]
    internal static partial nint THSTensor_data(nint tensor);
}
