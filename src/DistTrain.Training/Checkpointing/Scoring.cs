using System.Text.Json;
using System.Text.Json.Nodes;
using DistTrain.Checkpoint;
using DistTrain.Data;
using DistTrain.Model;
using DistTrain.Model.Layers;
using DistTrain.Training.Config;
using static TorchSharp.torch;

namespace DistTrain.Training.Checkpointing;

/// <summary>What evaluation harnesses ask of a checkpoint: per-token log-probabilities and a validation loss.</summary>
public static class Scoring
{
    /// <summary>
    /// Each input line {"tokens": [t0, t1, ...]} gets "logprobs": [log p(t1 | t0), log p(t2 | t0 t1), ...]
    /// (one fewer than the tokens). Returns the number of lines.
    /// </summary>
    public static int Score(LanguageModel model, string input, string output)
    {
        if (File.Exists(output) || Directory.Exists(output)) throw new CheckpointException($"{output}: exists; choose a new --out (nothing is overwritten)");
        if (Path.GetDirectoryName(Path.GetFullPath(output)) is { } folder && !Directory.Exists(folder))
            throw new CheckpointException($"--out {output}: the folder {folder} does not exist; create it or write elsewhere");
        if (!File.Exists(input)) throw new FileNotFoundException($"{input}: not found; --input takes a JSONL file with one {{\"tokens\": [...]}} per line");
        try { return ScoreLines(model, input, output); }
        catch
        {
            File.Delete(output + ".partial");   // nothing half-written is left behind
            throw;
        }
    }

    static int ScoreLines(LanguageModel model, string input, string output)
    {
        var config = model.Config;
        model.eval();
        using var writer = new StreamWriter(output + ".partial");
        int n = 0;
        foreach (var line in File.ReadLines(input))
        {
            n++;
            if (line.Trim().Length == 0) continue;
            JsonObject row;
            try { row = JsonNode.Parse(line)!.AsObject(); }
            catch (Exception e) when (e is JsonException or InvalidOperationException) { throw new InvalidDataException($"{input}:{n}: not a JSON object ({e.Message})"); }
            if (row["tokens"] is not JsonArray list)
                throw new InvalidDataException($"{input}:{n}: no \"tokens\" list of integer token ids");
            var tokens = list.Select((t, i) => t is JsonValue v && v.TryGetValue<long>(out var id) ? id
                : throw new InvalidDataException($"{input}:{n}: tokens[{i}] is {t?.ToJsonString() ?? "null"}, not an integer token id; score takes token ids (disttrain prepare tokenizes text)")).ToArray();
            if (tokens.Length < 2 || tokens.Length > config.BlockSize)
                throw new InvalidDataException($"{input}:{n}: {tokens.Length} tokens; score 2..{config.BlockSize} (model.block_size) per line");
            if (tokens.FirstOrDefault(t => t < 0 || t >= config.VocabSize, -1) is var bad and not -1)
                throw new InvalidDataException($"{input}:{n}: token {bad} is outside the vocabulary (0..{config.VocabSize - 1})");

            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var ids = tensor(tokens).unsqueeze(0);
            var logp = nn.functional.log_softmax(model.forward(ids[.., ..^1]).to(ScalarType.Float32), -1);   // (1, T-1, V)
            var picked = logp.gather(-1, ids[.., 1..].unsqueeze(-1)).squeeze(-1).squeeze(0);
            row["logprobs"] = new JsonArray(picked.data<float>().ToArray().Select(v => (JsonNode?)JsonValue.Create(v)).ToArray());
            writer.WriteLine(row.ToJsonString());
        }
        writer.Close();
        File.Move(output + ".partial", output);
        return n;
    }

    /// <summary>Mean next-token loss over every window of the data (seq_len, micro_batch and loss_chunk from the checkpoint's config).</summary>
    public static (double Loss, long Windows) Evaluate(LanguageModel model, Dictionary<string, object?> trainingTree, IReadOnlyList<string> data)
    {
        var section = new ConfigSection("checkpoint config", "", trainingTree);
        var train = section.Section("train");
        int seqLen = train.Int("seq_len", 256), batch = train.Int("micro_batch", 8);
        int lossChunk = Math.Max(0, train.Int("loss_chunk", ChunkedCrossEntropy.DefaultChunkRows(model.Config.VocabSize)));
        var files = data.SelectMany(DatasetFiles.Resolve).ToList();
        int eot = DatasetManifest.FindFor(data[0])?.EndOfText
            ?? throw new InvalidDataException($"{data[0]}: no dataset.json says the end-of-text id; evaluate data written by `disttrain prepare`");
        using var reader = new TokenWindowReader(new WindowReaderOptions(files, seqLen, eot, model.Config.VocabSize, Loop: false));
        model.eval();
        var window = new long[(seqLen + 1) * batch];
        double sum = 0;
        long windows = 0;
        while (true)
        {
            int filled = 0;
            while (filled < batch && reader.TryNext(window.AsSpan(filled * (seqLen + 1), seqLen + 1))) filled++;
            if (filled == 0) break;
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var w = tensor(window.AsSpan(0, filled * (seqLen + 1)).ToArray(), [filled, seqLen + 1]);
            sum += Trainer.Loss(model, w[.., ..^1], w[.., 1..], lossChunk).item<float>() * filled;
            windows += filled;
        }
        return (sum / windows, windows);
    }
}
