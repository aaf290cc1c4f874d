using System.Runtime.InteropServices;

namespace DistTrain.Cli.Terminal;

/// <summary>
/// Ends the process now, like a signal's default action but with our exit code: no finalizers, no static destructors.
/// Environment.Exit runs libtorch's while a training thread is inside it, which crashes (SIGSEGV, exit 139).
/// </summary>
static class ImmediateExit
{
    [DllImport("libc", EntryPoint = "_exit")]
    static extern void Exit(int code);

    public static void Now(int code)
    {
        Console.Out.Flush();
        Console.Error.Flush();
        Exit(code);
    }
}
