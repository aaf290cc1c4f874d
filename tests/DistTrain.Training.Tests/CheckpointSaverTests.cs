using DistTrain.Checkpoint;
using DistTrain.Data;
using DistTrain.Training.Checkpointing;
using DistTrain.Training.Config;
using static TorchSharp.torch;

namespace DistTrain.Training.Tests;

public class CheckpointSaverTests
{
    /// <summary>Holds every vote until released, like a coordinator waiting for a slow rank.</summary>
    sealed class HeldCommit : ICheckpointCommit
    {
        public readonly TaskCompletionSource Release = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly TaskCompletionSource<CheckpointVote> Voted = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public async Task<CommitDecision> VoteAsync(CheckpointVote vote, CancellationToken ct)
        {
            Voted.TrySetResult(vote);
            await Release.Task.WaitAsync(ct);
            return new CommitDecision(true, "", vote.Files);
        }
        public Task CompletedAsync(int step, string? dir, string? error, CancellationToken ct) => Task.CompletedTask;
    }

    [Fact]
    public async Task BeginReturnsBeforeTheSaveCommitsAndTheSaveHoldsTheWeightsOfItsStep()
    {
        using var dir = new TempDir();
        var config = TrainConfigLoader.Load(Repo.Config("tiny-muddformer.yaml"), [$"checkpoint.dir={Path.Combine(dir.Path, "ckpt")}", "checkpoint.interval=1"]);
        using var trainer = new Trainer(config);
        var commit = new HeldCommit();
        using var saver = new CheckpointSaver(config.Checkpoint, config, 0, 1, commit, new SaveOwner("job", "run"), trainer.Flat);
        var before = trainer.Flat.Master.clone();

        Assert.Null(saver.Begin(trainer.Flat, trainer.Optimizer, DataParallelPlan.For(config, 1), 7, 700, new Dictionary<int, DataCursor>(), CancellationToken.None));
        // training goes on while the save is written: the files are durable and voted, the commit is not done
        var vote = await commit.Voted.Task.WaitAsync(TimeSpan.FromMinutes(1));
        Assert.Equal(["shard-00000-of-00001.safetensors", "cursors-00000.json"], vote.Files.Select(f => f.Name));
        Assert.Null(saver.Poll());
        Assert.False(Directory.Exists(Path.Combine(dir.Path, "ckpt", "step-00000007")));
        using (no_grad()) trainer.Flat.Master.add_(1.0f);   // the next optimizer steps change the live buffers

        commit.Release.SetResult();
        var report = saver.Wait()!;
        Assert.Null(report.Error);
        Assert.Equal(Path.Combine(dir.Path, "ckpt", "step-00000007"), report.Dir);
        Assert.Equal(vote.Files.Sum(f => f.Bytes), report.Bytes);
        var manifest = CheckpointManifest.Read(report.Dir);
        manifest.Verify(report.Dir);
        using var saved = Safetensors.Open(Path.Combine(report.Dir, "shard-00000-of-00001.safetensors")).Read("master");
        Assert.True(saved.eq(before).all().item<bool>());    // the weights of step 7, not the ones changed after Begin
        Assert.Equal("step-00000007", File.ReadAllText(Path.Combine(dir.Path, "ckpt", "latest")).Trim());
    }

    [Fact]
    public void KeepLastRemovesThisJobsStaleTemporaryFoldersOnly()
    {
        using var dir = new TempDir();
        var (run, earlierRun, otherJob) = (new SaveOwner("job", "run"), new SaveOwner("job", "earlier-run"), new SaveOwner("other job", "run"));
        var later = CheckpointDirectory.TempFor(dir.Path, 20, run);
        var older = CheckpointDirectory.TempFor(dir.Path, 10, run);
        var interrupted = CheckpointDirectory.TempFor(dir.Path, 30, earlierRun);   // an earlier run of the job, killed mid-save
        var foreign = CheckpointDirectory.TempFor(dir.Path, 10, otherJob);
        var unnamed = Directory.CreateDirectory(Path.Combine(dir.Path, ".tmp-step-00000010-0123abcd")).FullName;   // an older DistTrain's: no job in the name
        Assert.Equal(later, CheckpointDirectory.TempFor(dir.Path, 20, run));   // every rank computes the same folder
        Assert.Equal(".tmp-step-00000010-run@other%20job", Path.GetFileName(foreign));

        CheckpointDirectory.KeepLast(dir.Path, 1, run, upToStep: 15);
        Assert.True(Directory.Exists(later));          // a later save of this run may be under way
        Assert.False(Directory.Exists(older));
        Assert.False(Directory.Exists(interrupted));
        Assert.True(Directory.Exists(foreign));
        Assert.True(Directory.Exists(unnamed));
        Assert.Equal([new PartialSave(unnamed, null, null), new PartialSave(foreign, 10, otherJob), new PartialSave(later, 20, run)], CheckpointDirectory.PartialSaves(dir.Path));
        Assert.EndsWith("-..%2Fx@job", CheckpointDirectory.TempFor(dir.Path, 5, new SaveOwner("job", "../x")));   // a name part, never a path
        Assert.Throws<ArgumentException>(() => new SaveOwner("", "run"));
    }
}
