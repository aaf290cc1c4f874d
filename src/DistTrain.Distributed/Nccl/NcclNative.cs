using System.Runtime.InteropServices;

namespace DistTrain.Distributed.Nccl;

// Hand-written because .NET has no NCCL binding and TorchSharp exposes neither NCCL nor the CUDA
// runtime. Declarations follow nccl.h (NCCL 2.28) and cuda_runtime_api.h; the library names
// "nccl" and "cudart" are logical: NcclLibraries resolves them to files (see there).

/// <summary>ncclResult_t.</summary>
internal enum NcclResult
{
    Success = 0,
    UnhandledCudaError = 1,
    SystemError = 2,
    InternalError = 3,
    InvalidArgument = 4,
    InvalidUsage = 5,
    RemoteError = 6,
    InProgress = 7,
    Timeout = 8,
}

/// <summary>ncclDataType_t.</summary>
internal enum NcclDataType
{
    Int8 = 0,
    Uint8 = 1,
    Int32 = 2,
    Uint32 = 3,
    Int64 = 4,
    Uint64 = 5,
    Float16 = 6,
    Float32 = 7,
    Float64 = 8,
    Bfloat16 = 9,
}

/// <summary>ncclRedOp_t (the built-in operations).</summary>
internal enum NcclRedOp
{
    Sum = 0,
    Prod = 1,
    Max = 2,
    Min = 3,
    Avg = 4,
}

/// <summary>ncclUniqueId: 128 opaque bytes, passed to ncclCommInitRank* by value.</summary>
[StructLayout(LayoutKind.Sequential, Size = Bytes)]
internal unsafe struct NcclUniqueId
{
    public const int Bytes = 128;   // NCCL_UNIQUE_ID_BYTES
    public fixed byte Internal[Bytes];
}

/// <summary>
/// The NCCL 2.14 layout of ncclConfig_t. NCCL reads <c>size</c> bytes of it and fills every later
/// field with its default when <c>version</c> is older than the field, so this prefix stays valid
/// on newer libraries. We only set <c>blocking</c>.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct NcclConfig
{
    const int Undefined = int.MinValue;        // NCCL_CONFIG_UNDEF_INT
    const uint ApiMagic = 0xcafebeef;          // NCCL_API_MAGIC
    const uint LayoutVersion = 21400;          // NCCL_VERSION(2,14,0)

    public nuint Size;
    public uint Magic;
    public uint Version;
    public int Blocking;
    public int CgaClusterSize;
    public int MinCtas;
    public int MaxCtas;
    public nint NetName;

    public static unsafe NcclConfig NonBlocking() => new()
    {
        Size = (nuint)sizeof(NcclConfig),
        Magic = ApiMagic,
        Version = LayoutVersion,
        Blocking = 0,
        CgaClusterSize = Undefined,
        MinCtas = Undefined,
        MaxCtas = Undefined,
        NetName = 0,
    };
}

/// <summary>The NCCL and CUDA runtime entry points DistTrain uses, plus TorchSharp's data pointer.</summary>
internal static unsafe partial class NcclNative
{
    internal const string Nccl = "nccl";
    internal const string Cudart = "cudart";
    internal const string LibTorchSharp = "LibTorchSharp";

    /// <summary>The legacy default stream (0): TorchSharp has no stream API, so every kernel of ours runs there.</summary>
    internal const nint DefaultStream = 0;

    internal const int CudaSuccess = 0;
    internal const int CudaErrorNotReady = 600;

    // Every public entry point calls NcclLibraries.Load() before the first of these binds.

    // ---- NCCL (nccl.h) ----

    [LibraryImport(Nccl)]
    internal static partial NcclResult ncclGetVersion(out int version);

    [LibraryImport(Nccl)]
    internal static partial NcclResult ncclGetUniqueId(out NcclUniqueId uniqueId);

    [LibraryImport(Nccl)]
    internal static partial NcclResult ncclCommInitRank(out nint comm, int nranks, NcclUniqueId commId, int rank);

    [LibraryImport(Nccl)]
    internal static partial NcclResult ncclCommInitRankConfig(out nint comm, int nranks, NcclUniqueId commId, int rank, NcclConfig* config);

    [LibraryImport(Nccl)]
    internal static partial NcclResult ncclAllReduce(nint sendbuff, nint recvbuff, nuint count, NcclDataType datatype, NcclRedOp op, nint comm, nint stream);

    [LibraryImport(Nccl)]
    internal static partial NcclResult ncclBroadcast(nint sendbuff, nint recvbuff, nuint count, NcclDataType datatype, int root, nint comm, nint stream);

    [LibraryImport(Nccl)]
    internal static partial NcclResult ncclSend(nint sendbuff, nuint count, NcclDataType datatype, int peer, nint comm, nint stream);

    [LibraryImport(Nccl)]
    internal static partial NcclResult ncclRecv(nint recvbuff, nuint count, NcclDataType datatype, int peer, nint comm, nint stream);

    [LibraryImport(Nccl)]
    internal static partial NcclResult ncclGroupStart();

    [LibraryImport(Nccl)]
    internal static partial NcclResult ncclGroupEnd();

    [LibraryImport(Nccl)]
    internal static partial NcclResult ncclCommFinalize(nint comm);

    [LibraryImport(Nccl)]
    internal static partial NcclResult ncclCommDestroy(nint comm);

    [LibraryImport(Nccl)]
    internal static partial NcclResult ncclCommAbort(nint comm);

    [LibraryImport(Nccl)]
    internal static partial NcclResult ncclCommGetAsyncError(nint comm, out NcclResult asyncError);

    [LibraryImport(Nccl)]
    internal static partial byte* ncclGetErrorString(NcclResult result);

    /// <summary>The last error NCCL recorded (not cleared by reading; may belong to an earlier call).</summary>
    [LibraryImport(Nccl)]
    internal static partial byte* ncclGetLastError(nint comm);

    // ---- CUDA runtime (cuda_runtime_api.h); cudaError_t is an int ----

    [LibraryImport(Cudart)]
    internal static partial int cudaSetDevice(int device);

    [LibraryImport(Cudart)]
    internal static partial int cudaGetDeviceCount(out int count);

    [LibraryImport(Cudart)]
    internal static partial int cudaStreamQuery(nint stream);

    [LibraryImport(Cudart)]
    internal static partial int cudaStreamSynchronize(nint stream);

    [LibraryImport(Cudart)]
    internal static partial int cudaDeviceSynchronize();

    [LibraryImport(Cudart)]
    internal static partial int cudaRuntimeGetVersion(out int version);

    [LibraryImport(Cudart)]
    internal static partial int cudaDriverGetVersion(out int version);

    [LibraryImport(Cudart)]
    internal static partial byte* cudaGetErrorName(int error);

    [LibraryImport(Cudart)]
    internal static partial byte* cudaGetErrorString(int error);

    // ---- TorchSharp (libLibTorchSharp.so, already loaded by TorchSharp) ----

    /// <summary><c>tensor->data_ptr()</c>: the address of the first element (storage offset included); null on error.</summary>
    [LibraryImport(LibTorchSharp)]
    internal static partial nint THSTensor_data(nint tensor);

    // ---- messages ----

    internal static string Text(byte* s) => s == null ? "" : Marshal.PtrToStringUTF8((nint)s) ?? "";

    internal static string ErrorString(NcclResult result) => Text(ncclGetErrorString(result));

    internal static string LastError(nint comm) => Text(ncclGetLastError(comm));

    internal static string CudaError(int error) => $"{Text(cudaGetErrorName(error))} ({Text(cudaGetErrorString(error))})";

    /// <summary>NCCL_VERSION_CODE as "2.28.3": X*1000+Y*100+Z up to 2.8, X*10000+Y*100+Z after.</summary>
    internal static string VersionText(int code) => code < 10000
        ? $"{code / 1000}.{code / 100 % 10}.{code % 100}"
        : $"{code / 10000}.{code / 100 % 100}.{code % 100}";
}
