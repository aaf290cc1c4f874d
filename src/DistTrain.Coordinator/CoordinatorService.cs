using DistTrain.Protocol.V1;
using Grpc.Core;
using Google.Protobuf;

namespace DistTrain.Coordinator;

/// <summary>The gRPC face of <see cref="JobState"/>.</summary>
sealed class CoordinatorService(JobState job) : Protocol.V1.Coordinator.CoordinatorBase
{
    public override Task<RegisterReply> Register(RegisterRequest request, ServerCallContext context) =>
        job.Register(request, context.CancellationToken).WaitAsync(context.CancellationToken);

    public override async Task<RendezvousReply> Rendezvous(RendezvousRequest request, ServerCallContext context) =>
        new() { NcclUniqueId = ByteString.CopyFrom(await job.Rendezvous(request).WaitAsync(context.CancellationToken)) };

    public override async Task Heartbeat(IAsyncStreamReader<HeartbeatRequest> requests, IServerStreamWriter<HeartbeatReply> replies, ServerCallContext context)
    {
        int rank = -1, generation = 0;
        using var writing = new SemaphoreSlim(1);   // one write at a time on the reply stream
        var reading = Task.Run(async () =>
        {
            await foreach (var beat in requests.ReadAllAsync(context.CancellationToken))
            {
                (rank, generation) = (beat.Rank, beat.Generation);
                job.Heartbeat(beat);
                // every beat is answered (carry on, or a graceful stop's next move): a worker that hears nothing for heartbeat.timeout_s knows the coordinator froze
                await writing.WaitAsync(context.CancellationToken);
                try { await replies.WriteAsync(job.ReplyTo(beat.Rank, beat.Generation), context.CancellationToken); }
                finally { writing.Release(); }
            }
        });
        var first = await Task.WhenAny(reading, job.Stopped);
        if (first == job.Stopped)
        {
            if (job.Failed)
            {
                await writing.WaitAsync(context.CancellationToken);
                try { await replies.WriteAsync(new HeartbeatReply { Command = HeartbeatReply.Types.Command.Stop, Reason = job.Reason }); }
                finally { writing.Release(); }
            }
            return;
        }
        // the stream ended: cleanly after Finish, or because the worker vanished
        string how = reading.IsFaulted ? $"its heartbeat stream broke ({reading.Exception!.InnerException?.GetType().Name})" : "its heartbeat stream ended before it finished";
        if (rank >= 0) job.Lost(rank, how, generation);
    }

    public override Task<FinishReply> Finish(FinishRequest request, ServerCallContext context)
    {
        job.Finish(request);
        return Task.FromResult(new FinishReply());
    }

    public override Task<CheckpointVoteReply> CheckpointVote(CheckpointVoteRequest request, ServerCallContext context) =>
        job.CheckpointVote(request).WaitAsync(context.CancellationToken);

    public override Task<SnapshotVoteReply> SnapshotVote(SnapshotVoteRequest request, ServerCallContext context) =>
        job.SnapshotVote(request).WaitAsync(context.CancellationToken);

    public override Task<CheckpointDoneReply> CheckpointDone(CheckpointDoneRequest request, ServerCallContext context)
    {
        job.CheckpointDone(request);
        return Task.FromResult(new CheckpointDoneReply());
    }

    public override Task<StopJobReply> RequestStop(StopJobRequest request, ServerCallContext context) => Task.FromResult(job.RequestStop(request));

    public override Task<JobStatus> GetStatus(StatusRequest request, ServerCallContext context) => Task.FromResult(job.Status());
}
