using System.Buffers.Binary;
using System.Text.Json;
using DistTrain.Training.Config;
using Tensorboard;

namespace DistTrain.Training.Tests;

/// <summary>RUN_DIR/tensorboard/ holds the logged steps as TensorBoard scalars, read back through TorchSharp's own Event type.</summary>
public class TensorBoardLogTests
{
    [Fact]
    public void EveryLoggedStepBecomesOneScalarPerMetricAtItsStep()
    {
        using var runs = new TempDir();
        var config = TrainConfigLoader.Load(Repo.Config("tiny-transformerpp.yaml"),
            ["train.micro_batch=8", "train.seq_len=64", "train.steps=6", "train.log_interval=2", "train.eval_interval=4", "train.eval_batches=2",
             "optim.warmup_steps=2", $"train.run_dir={runs.Path}"]);
        using var trainer = new Trainer(config);
        var result = trainer.Run();

        var file = Assert.Single(Directory.GetFiles(Path.Combine(result.RunDirectory, "tensorboard"), "events.out.tfevents.*"));
        var events = ReadRecords(file).Select(Event.Parser.ParseFrom).ToList();
        Assert.Equal("brain.Event:2", events[0].FileVersion);
        var scalars = events.Skip(1).Select(e => (Tag: e.Summary.Value.Single().Tag, e.Step, Value: e.Summary.Value.Single().SimpleValue)).ToList();

        var metrics = File.ReadAllLines(Path.Combine(result.RunDirectory, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal([2, 4, 6], metrics.Select(m => m.GetProperty("step").GetInt32()));
        foreach (var (tag, key) in new[] { ("train/loss", "loss"), ("train/lr", "lr"), ("train/tokens_per_s", "tokens_per_s"),
                                           ("train/grad_norm", "grad_norm"), ("train/data_wait_s", "data_wait_s"), ("train/step_s", "step_s") })
        {
            var series = scalars.Where(s => s.Tag == tag).ToList();
            Assert.Equal(metrics.Select(m => (long)m.GetProperty("step").GetInt32()), series.Select(s => s.Step));
            Assert.Equal(metrics.Select(m => (float)m.GetProperty(key).GetDouble()), series.Select(s => s.Value));
        }
        // validation at step 4 (eval_interval) and at the last step
        Assert.Equal([4L, 6L], scalars.Where(s => s.Tag == "val/loss").Select(s => s.Step));
        Assert.Equal(3 * 6 + 2, scalars.Count);
    }

    /// <summary>TFRecord framing: u64 length, u32 masked CRC of the length, the bytes, u32 masked CRC of the bytes.</summary>
    static IEnumerable<byte[]> ReadRecords(string path)
    {
        var bytes = File.ReadAllBytes(path);
        int at = 0;
        while (at < bytes.Length)
        {
            Assert.True(bytes.Length - at >= 12, $"{path}: a record header is cut short at byte {at}");
            int length = checked((int)BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(at)));
            at += 12;
            Assert.True(bytes.Length - at >= length + 4, $"{path}: a {length}-byte record at byte {at} is cut short");
            yield return bytes.AsSpan(at, length).ToArray();
            at += length + 4;
        }
    }
}
