using DistTrain.Distributed;
using DistTrain.Training.Checkpointing;
using DistTrain.Training.Config;
using static TorchSharp.torch;

namespace DistTrain.Training.Tests;

public class CheckpointRoundTripTests
{
    [Fact]
    public void MasterWeightsMomentsAndOptimizerScalarsLoadAsTheyWereSaved()
    {
        using var runs = new TempDir();
        var config = TrainConfigLoader.Load(Repo.Config("tiny-muddformer.yaml"),
            ["train.steps=6", "train.micro_batch=4", "train.seq_len=32", "train.eval_interval=0", "train.eval_batches=0", "optim.warmup_steps=1",
             $"train.run_dir={runs.Path}", "checkpoint.interval=6", $"checkpoint.dir={Path.Combine(runs.Path, "ckpt")}"]);
        using var trained = new Trainer(config);
        trained.Run();   // saves step 6 after its last step

        using var fresh = new Trainer(config);
        var plan = DataParallelPlan.For(config, 1);
        var (dir, step, cursors, partial, refused) = TrainingCheckpoint.Load("latest", config.Checkpoint, fresh.Flat, fresh.Optimizer, plan, config.Train.Name);

        Assert.EndsWith("step-00000006", dir);
        Assert.Equal(6, step);
        Assert.Empty(partial);
        Assert.Empty(refused);
        Assert.Equal(24, cursors[0].Windows);                      // 6 steps x 4 windows
        Assert.True(fresh.Flat.Master.eq(trained.Flat.Master).all().item<bool>());
        Assert.True(fresh.Flat.Params.eq(trained.Flat.Params).all().item<bool>());
        Assert.True(fresh.Optimizer.ExpAvg.eq(trained.Optimizer.ExpAvg).all().item<bool>());
        Assert.True(fresh.Optimizer.ExpAvgSq.eq(trained.Optimizer.ExpAvgSq).all().item<bool>());
        Assert.Equal(trained.Optimizer.Counters, fresh.Optimizer.Counters);
        Assert.Equal((6.0, -1L), fresh.Optimizer.Counters);
    }

    [Fact]
    public void AnotherModelOrShardCountIsRefusedWithWhatToSet()
    {
        using var runs = new TempDir();
        string[] common = ["train.steps=2", "train.micro_batch=4", "train.seq_len=32", "train.eval_interval=0", "train.eval_batches=0", "optim.warmup_steps=1",
            $"train.run_dir={runs.Path}", "checkpoint.interval=2", $"checkpoint.dir={Path.Combine(runs.Path, "ckpt")}"];
        var config = TrainConfigLoader.Load(Repo.Config("tiny-muddformer.yaml"), common);
        using (var t = new Trainer(config)) t.Run();

        var wider = TrainConfigLoader.Load(Repo.Config("tiny-muddformer.yaml"), [.. common, "model.dim=128"]);
        using var other = new Trainer(wider);
        var error = Assert.Throws<DistTrain.Checkpoint.CheckpointException>(() =>
            TrainingCheckpoint.Load("latest", wider.Checkpoint, other.Flat, other.Optimizer, DataParallelPlan.For(wider, 1), wider.Train.Name));
        Assert.Contains("written for another model", error.Message);

        var sharded = TrainConfigLoader.Load(Repo.Config("tiny-muddformer.yaml"), [.. common, "data.shards=2"]);
        using var same = new Trainer(sharded);
        var shards = Assert.Throws<DistTrain.Checkpoint.CheckpointException>(() =>
            TrainingCheckpoint.Load("latest", sharded.Checkpoint, same.Flat, same.Optimizer, DataParallelPlan.For(sharded, 1), sharded.Train.Name));
        Assert.Contains("saved with data.shards 1, this run has 2; set data.shards=1", shards.Message);
    }

    [Fact]
    public void ShardFilesTheManifestDoesNotListAreNeverRead()
    {
        // issue 13: world_size edited and unlisted shards dropped in beside the verified ones; load named its files from world_size
        using var runs = new TempDir();
        string ckpt = Path.Combine(runs.Path, "ckpt");
        var config = TrainConfigLoader.Load(Repo.Config("tiny-muddformer.yaml"),
            ["train.steps=2", "train.micro_batch=4", "train.seq_len=32", "train.eval_interval=0", "train.eval_batches=0", "optim.warmup_steps=1",
             $"train.run_dir={runs.Path}", "checkpoint.interval=2", $"checkpoint.dir={ckpt}"]);
        using (var t = new Trainer(config)) t.Run();
        string dir = Path.Combine(ckpt, "step-00000002");
        foreach (var name in new[] { "shard-00000-of-00002.safetensors", "shard-00001-of-00002.safetensors" })
            File.Copy(Path.Combine(dir, "shard-00000-of-00001.safetensors"), Path.Combine(dir, name));
        string manifest = Path.Combine(dir, "manifest.json");
        File.WriteAllText(manifest, File.ReadAllText(manifest).Replace("\"world_size\": 1", "\"world_size\": 2"));

        DistTrain.Checkpoint.CheckpointManifest.Read(dir).Verify(dir);   // every listed file is intact: only the reading can tell
        using var fresh = new Trainer(config);
        var error = Assert.Throws<DistTrain.Checkpoint.CheckpointException>(() =>
            TrainingCheckpoint.Load("latest", config.Checkpoint, fresh.Flat, fresh.Optimizer, DataParallelPlan.For(config, 1), config.Train.Name));
        Assert.StartsWith($"{manifest}: world_size 2 needs the shard files shard-00000-of-00002.safetensors, shard-00001-of-00002.safetensors, " +
            "the file list names shard-00000-of-00001.safetensors; the manifest is inconsistent, use an older checkpoint", error.Message);
        Assert.Throws<DistTrain.Checkpoint.CheckpointException>(() => TrainingCheckpoint.LoadModel(dir));
    }
}

/// <summary>A save copies the training state and nothing else: with saves every 2 steps the losses are bit-identical to a run without any.</summary>
public class SavesDoNotChangeTrainingTests
{
    [Fact]
    public void LossesWithSavesEveryTwoStepsEqualThoseWithoutSaves()
    {
        using var runs = new TempDir();
        double[] Losses(string interval)
        {
            var config = TrainConfigLoader.Load(Repo.Config("tiny-muddformer.yaml"),
                ["train.steps=8", "train.micro_batch=4", "train.seq_len=32", "train.eval_interval=0", "train.eval_batches=0", "optim.warmup_steps=1",
                 "train.log_interval=1", $"train.run_dir={runs.Path}", $"checkpoint.interval={interval}", $"checkpoint.dir={Path.Combine(runs.Path, "ckpt-" + interval)}"]);
            using var trainer = new Trainer(config);
            return trainer.Run().Reports.Select(r => r.Loss).ToArray();
        }
        var without = Losses("0");
        var with = Losses("2");
        Assert.Equal(8, without.Length);
        Assert.Equal(without, with);
    }
}
