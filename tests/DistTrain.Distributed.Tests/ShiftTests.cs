using static TorchSharp.torch;

namespace DistTrain.Distributed.Tests;

/// <summary>The ring's shift (an in-memory snapshot's buddy copy): each rank ends with its left neighbour's data, also when the sizes differ by rank.</summary>
public class ShiftTests
{
    static float[] Data(int rank, int n)
    {
        var g = new Random(300 + rank);
        return Enumerable.Range(0, n).Select(_ => g.NextSingle()).ToArray();
    }

    // rank r sends r + 1 + (1 << 20) * (r % 2) values: segments on every rank, and no two neighbours of one size
    static int Size(int rank) => rank + 1 + (1 << 20) * (rank % 2);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task EachRankReceivesItsLeftNeighboursSlice(int w)
    {
        var received = await Ring.RunAsync(w, comm =>
        {
            int left = (comm.Rank - 1 + w) % w;
            using var send = tensor(Data(comm.Rank, Size(comm.Rank)));
            using var receive = full(Size(left), float.NaN);
            comm.Shift(send, receive);
            comm.Shift(send, receive);   // and again: the collective sequence stays in step
            Assert.Equal(Data(comm.Rank, Size(comm.Rank)), send.data<float>().ToArray());   // the sent data is left alone
            return receive.data<float>().ToArray();
        });
        for (int rank = 0; rank < w; rank++)
            Assert.Equal(Data((rank - 1 + w) % w, Size((rank - 1 + w) % w)), received[rank]);
    }

    [Fact]
    public async Task AReceiveOfTheWrongSizeIsRefusedNamingBothSides()
    {
        var errors = await Ring.RunAsync(2, comm =>
        {
            using var send = zeros(10);
            using var receive = zeros(comm.Rank == 1 ? 11 : 10);   // rank 1 expects 11 values, rank 0 sends 10
            try { comm.Shift(send, receive); return ""; }
            catch (CommunicatorException e) { return e.Message; }
        });
        Assert.Contains("rank 1 is in collective #0, a shift of 44 bytes to the right neighbour but rank 0 is in collective #0, a shift of 40 bytes", errors[1]);
    }
}
