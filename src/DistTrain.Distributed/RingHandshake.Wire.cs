using System.Buffers.Binary;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace DistTrain.Distributed;

// The handshake's messages on the wire (little-endian), and the proofs of the job token.
//   hello     connector -> acceptor  magic "DTRH", version u16, rank i32, world size i32, job id (u16 length + UTF-8), nonce[32]
//   challenge acceptor -> connector  magic "DTRR", status u8 (1 challenge, 0 refused), rank i32, text (u16 length + UTF-8:
//                                    the acceptor's job id, or the reason it refused), then for a challenge nonce[32], proof[32]
//   proof     connector -> acceptor  magic "DTRP", proof[32]
//   verdict   acceptor -> connector  magic "DTRV", accepted u8, reason (u16 length + UTF-8)
// Version 1 had no nonce, proofs or verdict; its hello and refusal share these layouts, so the two versions refuse
// each other by name. The messages and proofs are internal, not private: tests speak the protocol as a stranger would.
internal static partial class RingHandshake
{
    const uint HelloMagic = 0x48525444;     // "DTRH" little-endian
    const uint ReplyMagic = 0x52525444;     // "DTRR"
    const uint ProofMagic = 0x50525444;     // "DTRP"
    const uint VerdictMagic = 0x56525444;   // "DTRV"
    const int NonceBytes = 32, ProofBytes = 32, MaxText = 4096;

    internal sealed record Hello(ushort Version, int Rank, int WorldSize, string JobId, byte[] Nonce, byte[] Wire);

    internal sealed record Challenge(bool Accepted, int Rank, string Text, byte[] Nonce, byte[] Proof, byte[] Signed);

    /// <summary>
    /// HMAC-SHA256 keyed by the job token over the role and everything both sides said before it (both nonces, ranks,
    /// world size, job id), so a proof answers only this connection's challenge and never stands in for the other side's.
    /// </summary>
    internal static byte[] Proof(byte[] key, string role, byte[] hello, byte[] challenge)
    {
        using var mac = IncrementalHash.CreateHMAC(HashAlgorithmName.SHA256, key);
        mac.AppendData(Encoding.ASCII.GetBytes($"DistTrain ring {ProtocolVersion} {role}\0"));
        mac.AppendData(hello);
        mac.AppendData(challenge);
        return mac.GetHashAndReset();
    }

    static bool ProofHolds(byte[] key, string role, byte[] hello, byte[] challenge, byte[] proof) =>
        CryptographicOperations.FixedTimeEquals(Proof(key, role, hello, challenge), proof);

    internal static Hello NewHello(ushort version, int rank, int worldSize, string jobId)
    {
        var job = Encoding.UTF8.GetBytes(jobId);
        var nonce = RandomNumberGenerator.GetBytes(NonceBytes);
        var b = new byte[16 + job.Length + NonceBytes];
        BinaryPrimitives.WriteUInt32LittleEndian(b, HelloMagic);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(4), version);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(6), rank);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(10), worldSize);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(14), checked((ushort)job.Length));
        job.CopyTo(b, 16);
        nonce.CopyTo(b, 16 + job.Length);
        return new Hello(version, rank, worldSize, jobId, nonce, b);
    }

    /// <summary>A hello; one of another protocol version comes back without its nonce (and is refused by its version).</summary>
    internal static async Task<Hello> ReadHelloAsync(Socket s, CancellationToken ct)
    {
        var head = new byte[16];
        await ReadExactlyAsync(s, head, ct).ConfigureAwait(false);
        if (BinaryPrimitives.ReadUInt32LittleEndian(head) != HelloMagic)
            throw new InvalidDataException("not a DistTrain ring handshake");
        var version = BinaryPrimitives.ReadUInt16LittleEndian(head.AsSpan(4));
        int length = BinaryPrimitives.ReadUInt16LittleEndian(head.AsSpan(14));
        if (length > MaxText) throw new InvalidDataException($"job id of {length} bytes");
        var rest = new byte[length + (version == ProtocolVersion ? NonceBytes : 0)];
        await ReadExactlyAsync(s, rest, ct).ConfigureAwait(false);
        return new Hello(version, BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(6)), BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(10)),
            Encoding.UTF8.GetString(rest, 0, length), rest[length..], [.. head, .. rest]);
    }

    /// <summary>A challenge (text: this rank's job id) with its proof, or a refusal (text: the reason).</summary>
    internal static Challenge NewChallenge(bool accepted, int rank, string text, byte[] key, byte[] hello)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var b = new byte[11 + bytes.Length + (accepted ? NonceBytes : 0)];
        BinaryPrimitives.WriteUInt32LittleEndian(b, ReplyMagic);
        b[4] = accepted ? (byte)1 : (byte)0;
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(5), rank);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(9), checked((ushort)bytes.Length));
        bytes.CopyTo(b, 11);
        if (!accepted) return new Challenge(false, rank, text, [], [], b);
        var nonce = RandomNumberGenerator.GetBytes(NonceBytes);
        nonce.CopyTo(b, 11 + bytes.Length);
        return new Challenge(true, rank, text, nonce, Proof(key, "acceptor", hello, b), b);
    }

    internal static byte[] Encode(Challenge c) => [.. c.Signed, .. c.Proof];

    internal static async Task<Challenge> ReadChallengeAsync(Socket s, CancellationToken ct)
    {
        var head = new byte[11];
        await ReadExactlyAsync(s, head, ct).ConfigureAwait(false);
        if (BinaryPrimitives.ReadUInt32LittleEndian(head) != ReplyMagic)
            throw new InvalidDataException("the listener did not answer with a DistTrain ring reply");
        int length = BinaryPrimitives.ReadUInt16LittleEndian(head.AsSpan(9));
        if (length > MaxText) throw new InvalidDataException($"reply text of {length} bytes");
        bool accepted = head[4] == 1;
        var rest = new byte[length + (accepted ? NonceBytes + ProofBytes : 0)];
        await ReadExactlyAsync(s, rest, ct).ConfigureAwait(false);
        var text = Encoding.UTF8.GetString(rest, 0, length);
        int rank = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(5));
        return accepted
            ? new Challenge(true, rank, text, rest[length..(length + NonceBytes)], rest[(length + NonceBytes)..], [.. head, .. rest[..(length + NonceBytes)]])
            : new Challenge(false, rank, text, [], [], [.. head, .. rest]);
    }

    internal static byte[] EncodeProof(byte[] proof)
    {
        var b = new byte[4 + ProofBytes];
        BinaryPrimitives.WriteUInt32LittleEndian(b, ProofMagic);
        proof.CopyTo(b, 4);
        return b;
    }

    internal static async Task<byte[]> ReadProofAsync(Socket s, CancellationToken ct)
    {
        var b = new byte[4 + ProofBytes];
        await ReadExactlyAsync(s, b, ct).ConfigureAwait(false);
        if (BinaryPrimitives.ReadUInt32LittleEndian(b) != ProofMagic)
            throw new InvalidDataException("no proof of the job token after the challenge");
        return b[4..];
    }

    internal static byte[] EncodeVerdict(string? refusal)
    {
        var text = Encoding.UTF8.GetBytes(refusal ?? "");
        var b = new byte[7 + text.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(b, VerdictMagic);
        b[4] = refusal is null ? (byte)1 : (byte)0;
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(5), checked((ushort)text.Length));
        text.CopyTo(b, 7);
        return b;
    }

    /// <summary>Null when accepted, else the acceptor's reason.</summary>
    internal static async Task<string?> ReadVerdictAsync(Socket s, CancellationToken ct)
    {
        var head = new byte[7];
        await ReadExactlyAsync(s, head, ct).ConfigureAwait(false);
        if (BinaryPrimitives.ReadUInt32LittleEndian(head) != VerdictMagic)
            throw new InvalidDataException("the listener did not answer the proof with a verdict");
        int length = BinaryPrimitives.ReadUInt16LittleEndian(head.AsSpan(5));
        if (length > MaxText) throw new InvalidDataException($"reason of {length} bytes");
        var text = new byte[length];
        await ReadExactlyAsync(s, text, ct).ConfigureAwait(false);
        return head[4] == 1 ? null : Encoding.UTF8.GetString(text);
    }

    static async Task SendAsync(Socket s, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        while (data.Length > 0) data = data[await s.SendAsync(data, SocketFlags.None, ct).ConfigureAwait(false)..];
    }

    static async Task ReadExactlyAsync(Socket s, Memory<byte> into, CancellationToken ct)
    {
        while (into.Length > 0)
        {
            int n = await s.ReceiveAsync(into, SocketFlags.None, ct).ConfigureAwait(false);
            if (n == 0) throw new EndOfStreamException("the connection closed during the handshake");
            into = into[n..];
        }
    }
}
