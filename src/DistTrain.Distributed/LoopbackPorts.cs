using System.Net;
using System.Net.Sockets;

namespace DistTrain.Distributed;

/// <summary>Ring endpoints for tests and single-host runs.</summary>
public static class LoopbackPorts
{
    /// <summary>
    /// <paramref name="count"/> distinct 127.0.0.1 endpoints on ports the OS reports free: bound together, then
    /// released. Another process could take one before the ring listens on it; fine for tests and one-host jobs.
    /// </summary>
    public static IReadOnlyList<IPEndPoint> Pick(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var sockets = new List<Socket>(count);
        try
        {
            for (int i = 0; i < count; i++)
            {
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                sockets.Add(s);
                s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            }
            return sockets.Select(s => (IPEndPoint)s.LocalEndPoint!).ToList();
        }
        finally
        {
            foreach (var s in sockets) s.Dispose();
        }
    }
}
