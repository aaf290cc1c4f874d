using TorchSharp;
using static DistTrain.Distributed.Nccl.NcclNative;
using static TorchSharp.torch;

namespace DistTrain.Distributed.Nccl;

/// <summary>
/// Collectives over NCCL, on the raw device pointers of TorchSharp tensors.
/// <para>
/// Every collective is enqueued on the device's legacy default stream (stream 0). That is the
/// stream PyTorch runs kernels on unless told otherwise, and TorchSharp has no stream API, so it
/// is where every kernel of the trainer runs: a collective starts after the kernels that wrote
/// its buffer and finishes before the kernels that read it, without a host wait.
/// </para>
/// <para>
/// The communicator is created non-blocking, so no call here ever blocks inside NCCL: where we
/// wait (initialisation, <see cref="Synchronize"/>, <see cref="Barrier"/>, <see cref="Dispose"/>)
/// we poll NCCL's asynchronous error state and the stream. <see cref="Abort"/> may therefore be
/// called from any thread (a heartbeat or watchdog) at any time. NCCL's kernels watch the abort
/// flag, so a host blocked in a TorchSharp call that syncs (<c>item()</c>, a copy to the CPU)
/// behind a collective whose peer is gone is released too. Collectives themselves are for one
/// thread: every rank must issue the same collectives in the same order.
/// </para>
/// </summary>
public sealed class NcclCommunicator : ICommunicator
{
    /// <summary>The oldest NCCL with ncclAvg, bfloat16, non-blocking communicators and ncclGetLastError.</summary>
    const int MinimumVersion = 21400;
    static readonly TimeSpan FinalizeTimeout = TimeSpan.FromSeconds(60);

    readonly Lock _gate = new();   // held around each NCCL call on _comm, never across a wait
    readonly Tensor _barrierCell;  // (1,) float32 on this rank's device
    nint _comm;                    // 0 once aborted or destroyed
    volatile bool _aborted;        // Abort() was called
    volatile bool _failed;         // a call threw: Dispose aborts instead of finalizing
    bool _disposed;

    /// <summary>
    /// Joins the communicator of <paramref name="worldSize"/> ranks that <paramref name="uniqueId"/>
    /// names; returns once every rank has joined. The device becomes this thread's current CUDA device.
    /// </summary>
    /// <param name="uniqueId">The 128 bytes <see cref="CreateUniqueId"/> returned on rank 0.</param>
    /// <param name="initTimeout">How long to wait for the other ranks; null waits until <paramref name="cancellationToken"/> fires.</param>
    public NcclCommunicator(int rank, int worldSize, byte[] uniqueId, int cudaDevice,
        TimeSpan? initTimeout = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(uniqueId);
        ArgumentOutOfRangeException.ThrowIfLessThan(worldSize, 1);
        if (rank < 0 || rank >= worldSize)
            throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in [0, {worldSize}) for world size {worldSize}");
        if (uniqueId.Length != NcclUniqueId.Bytes)
            throw new ArgumentException($"an NCCL unique id has {NcclUniqueId.Bytes} bytes (from CreateUniqueId on rank 0); got {uniqueId.Length}", nameof(uniqueId));
        Rank = rank;
        WorldSize = worldSize;
        CudaDevice = cudaDevice;
        PrepareRuntime();

        CheckCuda(cudaGetDeviceCount(out int devices), "cudaGetDeviceCount");
        if (cudaDevice < 0 || cudaDevice >= devices)
            throw new CommunicatorException(   // the manifest's GPU list names it: a user's fix, not a bug
                $"rank {rank}: CUDA device {cudaDevice} does not exist; this process sees {devices} (CUDA_VISIBLE_DEVICES={Environment.GetEnvironmentVariable("CUDA_VISIBLE_DEVICES") ?? "unset"}); fix the manifest's gpus list");
        CheckCuda(cudaSetDevice(cudaDevice), "cudaSetDevice");

        var id = ToNcclId(uniqueId);
        var config = NcclConfig.NonBlocking();
        NcclResult result;
        unsafe
        {
            result = ncclCommInitRankConfig(out _comm, worldSize, id, rank, &config);
        }
        try
        {
            if (result == NcclResult.InProgress)
                WaitUntilReady("ncclCommInitRankConfig", initTimeout is { } t ? DateTime.UtcNow + t : null, cancellationToken);
            else if (result != NcclResult.Success)
                throw Failure("ncclCommInitRankConfig", result);
        }
        catch
        {
            AbortAfterFailure();
            throw;
        }
        _barrierCell = zeros(1, ScalarType.Float32, device: new Device(DeviceType.CUDA, cudaDevice)).DetachFromDisposeScope();
    }

    public int Rank { get; }
    public int WorldSize { get; }
    public int CudaDevice { get; }

    /// <summary>The NCCL in use, e.g. "2.28.3".</summary>
    public static string Version
    {
        get
        {
            PrepareRuntime();
            CheckNccl(ncclGetVersion(out int code), "ncclGetVersion");
            return VersionText(code);
        }
    }

    /// <summary>The file NCCL was loaded from.</summary>
    public static string LibraryPath
    {
        get
        {
            PrepareRuntime();
            return NcclLibraries.NcclPath;
        }
    }

    /// <summary>
    /// A fresh communicator id, for rank 0 to create and the coordinator to relay to every rank.
    /// NCCL's bootstrap root runs on a thread of the calling process until all ranks have joined,
    /// so the process that calls this must be a member (rank 0) and stay up.
    /// </summary>
    public static byte[] CreateUniqueId()
    {
        PrepareRuntime();
        CheckNccl(ncclGetUniqueId(out var id), "ncclGetUniqueId");
        var bytes = new byte[NcclUniqueId.Bytes];
        unsafe
        {
            new ReadOnlySpan<byte>(id.Internal, NcclUniqueId.Bytes).CopyTo(bytes);
        }
        return bytes;
    }

    /// <summary>In place, with ncclAvg: every rank ends with the mean over ranks. Enqueued on stream 0; no host wait.</summary>
    public void AllReduceMean(Tensor flat)
    {
        var (data, count, type) = Buffer(flat, nameof(AllReduceMean), floatingOnly: true);
        if (count > 0)
            Enqueue("ncclAllReduce", comm => ncclAllReduce(data, data, count, type, NcclRedOp.Avg, comm, DefaultStream));
        GC.KeepAlive(flat);
    }

    /// <summary>In place: every rank ends with rank <paramref name="root"/>'s values. Enqueued on stream 0; no host wait.</summary>
    public void Broadcast(Tensor flat, int root)
    {
        if (root < 0 || root >= WorldSize)
            throw new ArgumentOutOfRangeException(nameof(root), root, $"root must be a rank in [0, {WorldSize})");
        var (data, count, type) = Buffer(flat, nameof(Broadcast), floatingOnly: false);
        if (count > 0)
            Enqueue("ncclBroadcast", comm => ncclBroadcast(data, data, count, type, root, comm, DefaultStream));
        GC.KeepAlive(flat);
    }

    /// <summary>To the right neighbour, from the left one, as one NCCL group (a send and a receive). Enqueued on stream 0; no host wait.</summary>
    public void Shift(Tensor send, Tensor receive)
    {
        var (from, sent, type) = Buffer(send, nameof(Shift), floatingOnly: false);
        var (into, received, receiveType) = Buffer(receive, nameof(Shift), floatingOnly: false);
        if (receiveType != type) throw new ArgumentException($"Shift receives {receive.dtype} into a tensor of {send.dtype}: both must have one dtype", nameof(receive));
        if (WorldSize == 1)
        {
            receive.copy_(send);
            return;
        }
        int right = (Rank + 1) % WorldSize, left = (Rank - 1 + WorldSize) % WorldSize;
        Enqueue("ncclSend/ncclRecv", comm =>
        {
            var result = ncclGroupStart();
            if (result != NcclResult.Success) return result;
            // the group is closed whatever its calls returned; the first error is the one reported
            var sendResult = sent > 0 ? ncclSend(from, sent, type, right, comm, DefaultStream) : NcclResult.Success;
            var receiveResult = received > 0 ? ncclRecv(into, received, type, left, comm, DefaultStream) : NcclResult.Success;
            var end = ncclGroupEnd();
            return sendResult is not (NcclResult.Success or NcclResult.InProgress) ? sendResult
                : receiveResult is not (NcclResult.Success or NcclResult.InProgress) ? receiveResult : end;
        });
        GC.KeepAlive(send);
        GC.KeepAlive(receive);
    }

    /// <summary>Returns once every rank has reached it and this device's stream 0 has drained.</summary>
    public void Barrier()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var cell = THSTensor_data(_barrierCell.Handle);
        Enqueue("ncclAllReduce", comm => ncclAllReduce(cell, cell, 1, NcclDataType.Float32, NcclRedOp.Sum, comm, DefaultStream));
        Synchronize();
    }

    /// <summary>
    /// Waits until the work queued on this device's stream 0 has finished, polling so that a peer's
    /// failure or <see cref="Abort"/> ends the wait with a <see cref="CommunicatorException"/>.
    /// </summary>
    public void Synchronize()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckCuda(cudaSetDevice(CudaDevice), "cudaSetDevice");
        var spin = new SpinWait();
        while (true)
        {
            int status = cudaStreamQuery(DefaultStream);
            if (status == CudaSuccess)
                return;
            if (status != CudaErrorNotReady)
                throw CudaFailure("cudaStreamQuery", status);
            PollAsyncError("Synchronize");
            spin.SpinOnce();
        }
    }

    /// <summary>
    /// Ends the communicator now (ncclCommAbort): pending collectives stop, and every later call
    /// throws. Safe from any thread, also while another thread waits in a collective; idempotent.
    /// </summary>
    public void Abort()
    {
        _aborted = true;
        lock (_gate)
        {
            var comm = _comm;
            _comm = 0;
            if (comm == 0)
                return;
            var result = ncclCommAbort(comm);
            if (result is not (NcclResult.Success or NcclResult.InProgress))
                throw Failure("ncclCommAbort", result);
        }
    }

    /// <summary>
    /// Finalizes and destroys the communicator (ncclCommFinalize + ncclCommDestroy); if a call
    /// already failed, or finalizing does not finish within a minute, aborts instead.
    /// </summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
                return;
            _disposed = true;
        }
        _barrierCell.Dispose();
        if (_comm == 0)
            return;
        if (_failed)
        {
            AbortAfterFailure();   // the call that failed has reported why
            return;
        }
        try
        {
            NcclResult result;
            lock (_gate)
                result = _comm == 0 ? NcclResult.Success : ncclCommFinalize(_comm);
            if (result == NcclResult.InProgress)
                WaitUntilReady("ncclCommFinalize", DateTime.UtcNow + FinalizeTimeout, CancellationToken.None);
            else if (result != NcclResult.Success)
                throw Failure("ncclCommFinalize", result);
            lock (_gate)
            {
                var comm = _comm;
                _comm = 0;
                result = comm == 0 ? NcclResult.Success : ncclCommDestroy(comm);
            }
            if (result != NcclResult.Success)
                throw Failure("ncclCommDestroy", result);
        }
        catch (CommunicatorException) when (_aborted)
        {
            // Abort() on another thread ended the finalize and freed everything: nothing failed
        }
        catch
        {
            AbortAfterFailure();
            throw;
        }
    }

    // ---- internals ----

    /// <summary>
    /// CUDA through TorchSharp first: the wheel's libtorch_cuda.so maps its own libnccl.so.2 and
    /// libcudart.so.13, which NcclLibraries then reuses rather than another copy on the search path.
    /// </summary>
    static void PrepareRuntime()
    {
        try
        {
            InitializeDeviceType(DeviceType.CUDA);
        }
        catch (Exception e) when (e is not CommunicatorException)
        {
            throw new CommunicatorException(
                "the NCCL communicator needs CUDA, and TorchSharp found no CUDA libtorch: build with `make build TORCH_LIB=<site-packages>/torch/lib` " +
                "and run with LD_LIBRARY_PATH=$TORCH_LIB (README, \"GPU build\"), or use the ring communicator for CPU jobs", e);
        }
        NcclLibraries.Load();
        CheckNccl(ncclGetVersion(out int version), "ncclGetVersion");
        if (version < MinimumVersion)
            throw new CommunicatorException(
                $"NCCL {VersionText(version)} ({NcclLibraries.NcclPath}) is too old: DistTrain needs 2.14 or newer; point {NcclLibraries.NcclEnv} at a newer libnccl.so.2");
    }

    static unsafe NcclUniqueId ToNcclId(byte[] bytes)
    {
        NcclUniqueId id = default;
        bytes.CopyTo(new Span<byte>(id.Internal, NcclUniqueId.Bytes));
        return id;
    }

    /// <summary>The device pointer, element count and NCCL type of a contiguous tensor on this rank's device.</summary>
    (nint Data, nuint Count, NcclDataType Type) Buffer(Tensor tensor, string call, bool floatingOnly)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (tensor.device_type != DeviceType.CUDA || tensor.device_index != CudaDevice)
            throw new ArgumentException(
                $"{call}: the tensor is on {tensor.device}, but rank {Rank}'s NCCL communicator works on cuda:{CudaDevice} (CPU jobs use the ring communicator)", nameof(tensor));
        if (!tensor.is_contiguous())
            throw new ArgumentException(
                $"{call}: the tensor (shape [{string.Join(", ", tensor.shape)}], strides [{string.Join(", ", tensor.stride())}]) is not contiguous; " +
                "NCCL reads a flat buffer: pass the flat bucket or .contiguous()", nameof(tensor));
        var type = tensor.dtype switch
        {
            ScalarType.Float32 => NcclDataType.Float32,
            ScalarType.BFloat16 => NcclDataType.Bfloat16,
            ScalarType.Float16 => NcclDataType.Float16,
            ScalarType.Float64 => NcclDataType.Float64,
            ScalarType.Int32 when !floatingOnly => NcclDataType.Int32,
            ScalarType.Int64 when !floatingOnly => NcclDataType.Int64,
            ScalarType.Int8 when !floatingOnly => NcclDataType.Int8,
            ScalarType.Byte or ScalarType.Bool when !floatingOnly => NcclDataType.Uint8,
            _ => throw new ArgumentException(
                $"{call}: {tensor.dtype} is not supported; use float32, bfloat16, float16 or float64" + (floatingOnly ? "" : " (or int8/uint8/bool/int32/int64)"), nameof(tensor)),
        };
        long count = tensor.numel();
        if (count == 0)
            return (0, 0, type);
        var data = THSTensor_data(tensor.Handle);
        if (data == 0)
            throw new CommunicatorException($"{call}: TorchSharp returned no data pointer for the tensor (THSTensor_data)");
        return (data, (nuint)count, type);
    }

    void Enqueue(string call, Func<nint, NcclResult> collective)
    {
        NcclResult result;
        lock (_gate)
        {
            var comm = LiveComm(call);
            CheckCuda(cudaSetDevice(CudaDevice), "cudaSetDevice");
            result = collective(comm);
        }
        if (result == NcclResult.InProgress)   // still being enqueued (or, at a peer's first use, connecting)
            WaitUntilReady(call, null, CancellationToken.None, sleep: false);
        else if (result != NcclResult.Success)
            throw Failure(call, result);
    }

    /// <summary>Polls a non-blocking operation until NCCL reports it done, failed, or the deadline / token / Abort ends it.</summary>
    /// <param name="sleep">false for a collective's enqueue, which takes microseconds: SpinWait's 1 ms sleeps would leave the GPU idle between buckets</param>
    void WaitUntilReady(string call, DateTime? deadline, CancellationToken cancellationToken, bool sleep = true)
    {
        var spin = new SpinWait();
        while (PollAsyncError(call) == NcclResult.InProgress)
        {
            if (cancellationToken.IsCancellationRequested || DateTime.UtcNow > deadline)
            {
                bool cancelled = cancellationToken.IsCancellationRequested;
                AbortAfterFailure();
                throw new CommunicatorException(cancelled
                    ? $"{call} on rank {Rank} of {WorldSize} was cancelled before it finished; the communicator is aborted"
                    : $"{call} on rank {Rank} of {WorldSize} did not finish in time; the communicator is aborted. " +
                      (call == "ncclCommInitRankConfig"
                          ? "Not every rank joined: check that all ranks got the same unique id and can reach rank 0 (NCCL_SOCKET_IFNAME names the interface; NCCL_DEBUG=INFO shows the attempts)"
                          : "A peer is stuck or gone; its log has the cause"));
            }
            spin.SpinOnce(sleep ? 20 : -1);
        }
    }

    /// <summary>ncclCommGetAsyncError: Success or InProgress; an error or an abort throws.</summary>
    NcclResult PollAsyncError(string call)
    {
        NcclResult state;
        lock (_gate)
        {
            var comm = LiveComm(call);
            var result = ncclCommGetAsyncError(comm, out state);
            if (result != NcclResult.Success)
                throw Failure($"{call} (ncclCommGetAsyncError)", result);
        }
        if (state is NcclResult.Success or NcclResult.InProgress)
            return state;
        throw Failure(call, state);
    }

    /// <summary>Frees the communicator on a path that is already throwing; an abort failure would only hide that error.</summary>
    void AbortAfterFailure()
    {
        _failed = true;
        lock (_gate)
        {
            var comm = _comm;
            _comm = 0;
            if (comm != 0)
                _ = ncclCommAbort(comm);   // its result cannot change what the caller is told
        }
    }

    nint LiveComm(string call)
    {
        if (_comm != 0)
            return _comm;
        var why = _aborted ? "was aborted"
            : _failed ? "was shut down after an earlier failure (the first exception says why)"
            : "is disposed";
        _failed = true;
        throw new CommunicatorException($"{call} on rank {Rank} of {WorldSize}: the NCCL communicator {why}");
    }

    CommunicatorException Failure(string call, NcclResult result)
    {
        _failed = true;
        var last = LastError(_comm).Trim();
        return new CommunicatorException(
            $"{call} failed on rank {Rank} of {WorldSize} (cuda:{CudaDevice}): {ErrorString(result)} [nccl{result}]" +
            (last.Length > 0 ? $"; NCCL's last error: {last}" : "") + ". " + Hint(result));
    }

    CommunicatorException CudaFailure(string call, int error)
    {
        _failed = true;
        return new CommunicatorException(
            $"{call} failed on rank {Rank} of {WorldSize} (cuda:{CudaDevice}): {CudaError(error)}. " +
            "A kernel on this device failed or the device is lost; check nvidia-smi and the lines logged before this");
    }

    void CheckCuda(int error, string call)
    {
        if (error != CudaSuccess)
            throw CudaFailure(call, error);
    }

    static void CheckNccl(NcclResult result, string call)
    {
        if (result != NcclResult.Success)
            throw new CommunicatorException(
                $"{call} failed: {ErrorString(result)} [nccl{result}]; NCCL's last error: {LastError(0).Trim()}. {Hint(result)}");
    }

    static string Hint(NcclResult result) => result switch
    {
        NcclResult.UnhandledCudaError => "A CUDA call inside NCCL failed: check the GPU with nvidia-smi and that every rank has its own device",
        NcclResult.SystemError => "A system call or socket failed: check that the ranks reach each other (NCCL_SOCKET_IFNAME names the interface); NCCL_DEBUG=WARN prints NCCL's own log",
        NcclResult.InternalError => "NCCL hit an internal error; rerun with NCCL_DEBUG=INFO and keep that log",
        NcclResult.InvalidArgument or NcclResult.InvalidUsage => "NCCL refused the call: the ranks may disagree on the collective's size, dtype or order; NCCL_DEBUG=WARN says which argument",
        NcclResult.RemoteError => "Another rank failed or exited; its log has the cause",
        NcclResult.Timeout => "A peer did not answer in time; check that every rank is alive",
        _ => "NCCL_DEBUG=WARN prints NCCL's own log",
    };
}
