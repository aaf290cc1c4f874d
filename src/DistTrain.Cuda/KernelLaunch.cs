using System.Globalization;
using static DistTrain.Cuda.Native.CudaDriver;

namespace DistTrain.Cuda;

/// <summary>
/// cuLaunchKernel on the legacy default stream (0), the stream libtorch uses: our kernels are
/// ordered with libtorch's without any synchronisation. Arguments are passed as 8-byte slots (see
/// <see cref="Arg"/>); each slot's type must match the kernel's parameter exactly.
/// </summary>
internal static class KernelLaunch
{
    public static unsafe void Launch(CudaFunction f, (uint X, uint Y) grid, (uint X, uint Y) block, Func<string> shapes, params ReadOnlySpan<ulong> args)
    {
        if (grid.X == 0 || grid.Y == 0)
            return;   // nothing to do (no rows): CUDA refuses an empty grid
        f.Device.MakeCurrent();
        ulong* values = stackalloc ulong[args.Length];
        void** pointers = stackalloc void*[args.Length];
        for (int i = 0; i < args.Length; i++)
        {
            values[i] = args[i];
            pointers[i] = &values[i];   // little-endian: a 4-byte parameter reads the slot's low half
        }
        int r = cuLaunchKernel(f.Handle, grid.X, grid.Y, 1, block.X, block.Y, 1, 0, 0, pointers, null);
        if (r != Success)
            throw Error(r, f, grid, block, shapes());
        KernelLaunches.Add();
    }

    /// <summary>
    /// As <see cref="Launch"/>, with a by-value struct of 8-byte fields as the kernel's first parameter
    /// (<paramref name="table"/>: pointers, e.g. the mix's MixTable, up to 4 KB of parameters in all) and
    /// <paramref name="sharedBytes"/> of dynamic shared memory.
    /// </summary>
    public static unsafe void LaunchWithTable(CudaFunction f, (uint X, uint Y) grid, (uint X, uint Y) block, uint sharedBytes, Func<string> shapes,
                                              ReadOnlySpan<ulong> table, params ReadOnlySpan<ulong> args)
    {
        if (grid.X == 0 || grid.Y == 0)
            return;
        f.Device.MakeCurrent();
        ulong* values = stackalloc ulong[args.Length];
        void** pointers = stackalloc void*[args.Length + 1];
        fixed (ulong* first = table)
        {
            pointers[0] = first;   // CUDA copies sizeof(the struct) bytes from here
            for (int i = 0; i < args.Length; i++)
            {
                values[i] = args[i];
                pointers[i + 1] = &values[i];
            }
            int r = cuLaunchKernel(f.Handle, grid.X, grid.Y, 1, block.X, block.Y, 1, sharedBytes, 0, pointers, null);
            if (r != Success)
                throw Error(r, f, grid, block, shapes());
        }
        KernelLaunches.Add();
    }

    internal static CudaException Error(int code, CudaFunction f, (uint X, uint Y) grid, (uint X, uint Y) block, string shapes)
    {
        var what = string.Create(CultureInfo.InvariantCulture,
            $"kernel {f.Name} on {f.Device.Name} ({f.Device.Arch}), grid ({grid.X}, {grid.Y}), block ({block.X}, {block.Y}), {shapes}: {Describe(code)}");
        return new CudaException(code, CudaException.IsSticky(code)
            ? $"{what}. The CUDA context of this process is now unusable (a sticky error): the process must restart; resume from the last checkpoint, and report this with train.kernels=reference as the workaround"
            : $"{what}; run with train.kernels=reference to train without the fused kernels");
    }
}

/// <summary>A kernel argument as an 8-byte slot; the method names the C type it must match.</summary>
internal static class Arg
{
    public static ulong Ptr(nint p) => (ulong)p;                              // T* (0: null)
    public static ulong I64(long v) => unchecked((ulong)v);                   // long long
    public static ulong I32(int v) => unchecked((uint)v);                     // int
    public static ulong F32(float v) => BitConverter.SingleToUInt32Bits(v);   // float
    public static ulong F64(double v) => BitConverter.DoubleToUInt64Bits(v);  // double
}
