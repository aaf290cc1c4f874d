using System.Net;

namespace DistTrain.Distributed;

/// <summary>A collective or the connection between ranks failed; the communicator is unusable afterwards.</summary>
public sealed class CommunicatorException : Exception
{
    public CommunicatorException(string message, Exception? inner = null) : base(message, inner) { }

    /// <summary>A failure between this rank and a peer (or, with <paramref name="peerRank"/> null, a local one: Abort, Dispose).</summary>
    public CommunicatorException(int rank, int? peerRank, EndPoint? endpoint, string message, Exception? inner = null)
        : base(message, inner)
    {
        Rank = rank;
        PeerRank = peerRank;
        Endpoint = endpoint;
    }

    /// <summary>The rank that raised it, where known.</summary>
    public int? Rank { get; }
    /// <summary>The rank on the other end of the failed connection; null when the failure was local or not tied to one peer.</summary>
    public int? PeerRank { get; }
    /// <summary>Where <see cref="PeerRank"/> listens (or, for a refused stranger, where it connected from).</summary>
    public EndPoint? Endpoint { get; }
}
