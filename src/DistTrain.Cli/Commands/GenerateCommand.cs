using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using DistTrain.Checkpoint;
using DistTrain.Model.Inference;
using DistTrain.Training.Checkpointing;

namespace DistTrain.Cli.Commands;

/// <summary>disttrain generate --checkpoint PATH --prompt TEXT: continue a prompt with a checkpoint, decoded with the run's tokenizer.</summary>
static class GenerateCommand
{
    public static Command Create()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "a checkpoint folder, or checkpoint.dir for its latest", Required = true };
        var prompt = new Option<string>("--prompt", "-p") { Description = "the text to continue", Required = true };
        // numbers as text: a bad value is then one line naming the option (exit 2), not a parse error with the help
        var maxTokens = new Option<string>("--max-tokens", "-n") { Description = "tokens to generate at most (fewer at end-of-text or block_size)", DefaultValueFactory = _ => "200", HelpName = "N" };
        var temperature = new Option<string>("--temperature", "-t") { Description = "0 for greedy (argmax), otherwise the softmax temperature", DefaultValueFactory = _ => "0.8", HelpName = "T" };
        var topK = new Option<string>("--top-k") { Description = "sample among the K most likely tokens (0: all)", DefaultValueFactory = _ => "200", HelpName = "K" };
        var seed = new Option<string>("--seed") { Description = "seed of the sampler: the same seed gives the same text", DefaultValueFactory = _ => "0", HelpName = "S" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "decode with this tokenizer (byte, cl100k_base, o200k_base) instead of the run's" };
        var json = new Option<bool>("--json") { Description = "print one JSON object: prompt, text, token ids and why generation stopped" };
        var command = new Command("generate", "continue a prompt with a checkpoint (KV-cached sampling on the CPU)")
            { checkpoint, prompt, maxTokens, temperature, topK, seed, tokenizer, json };
        command.SetAction(parse =>
        {
            int n = Number.Int(parse.GetValue(maxTokens)!, "--max-tokens", min: 1);
            var sampling = new SamplingOptions(
                Number.Double(parse.GetValue(temperature)!, "--temperature", min: 0),
                Number.Int(parse.GetValue(topK)!, "--top-k", min: 0),
                Number.Long(parse.GetValue(seed)!, "--seed", min: 0));
            var text = parse.GetValue(prompt)!;
            if (text.Length == 0) throw new ArgumentException("--prompt: empty; give the text to continue, for example --prompt \"In the beginning\"");

            var dir = CheckpointFolder(parse.GetValue(checkpoint)!);
            var (model, tree, manifest) = TrainingCheckpoint.LoadModel(dir);
            using var _ = model;
            var tok = RunTokenizer.For(dir, manifest, tree, model.Config.VocabSize, parse.GetValue(tokenizer));
            long[] ids = [.. tok.Encode(text).Select(i => (long)i)];
            if (ids.Length > model.Config.BlockSize)
                throw new ArgumentException($"--prompt: {ids.Length} tokens ({tok.Name}), more than the model's block_size {model.Config.BlockSize}; shorten the prompt");

            bool asJson = parse.GetValue(json);
            var shown = new List<int>();   // the text so far, printed as it grows (not with --json)
            int written = 0;
            void Show(bool last)
            {
                var sofar = tok.Decode(shown);
                if (!last && sofar.EndsWith('\uFFFD')) return;   // a character whose bytes are still coming
                if (sofar.Length > written) Console.Out.Write(sofar[written..]);
                written = sofar.Length;
            }
            if (!asJson) Console.Out.Write(text);
            var clock = Stopwatch.StartNew();
            var output = Decoder.Generate(model, ids, n, sampling, stopToken: tok.EndOfText, onToken: token =>
            {
                if (asJson || token == tok.EndOfText) return;
                shown.Add((int)token);
                Show(last: false);
            });
            var stopped = output.Count > 0 && output[^1] == tok.EndOfText ? "end_of_text" : output.Count == n ? "max_tokens" : "block_size";
            if (asJson)
            {
                var generated = tok.Decode(output.Where(t => t != tok.EndOfText).Select(t => (int)t));
                Console.Out.WriteLine(JsonSerializer.Serialize(new { prompt = text, text = generated, prompt_ids = ids, ids = output, stopped, step = manifest.Step }));
                return 0;
            }
            Show(last: true);
            Console.Out.WriteLine();
            Console.Error.WriteLine($"{output.Count} tokens in {clock.Elapsed.TotalSeconds:F1} s (step {manifest.Step}, {tok.Name}, stopped at {stopped.Replace('_', ' ')})");
            return 0;
        });
        return command;
    }

    /// <summary>A checkpoint folder; a checkpoint.dir root stands for the checkpoint its latest names.</summary>
    static string CheckpointFolder(string path)
    {
        var dir = Path.GetFullPath(path);
        if (!Directory.Exists(dir))
            throw new ArgumentException($"--checkpoint {path}: no such folder; pass a checkpoint (checkpoint.dir/step-NNNNNNNN) or checkpoint.dir for its latest");
        if (File.Exists(Path.Combine(dir, CheckpointDirectory.ManifestFileName))) return dir;
        return CheckpointDirectory.ResolveLatest(dir)
            ?? throw new ArgumentException($"--checkpoint {path}: neither a checkpoint (no {CheckpointDirectory.ManifestFileName}) nor a checkpoint.dir with a latest; pass a step-NNNNNNNN folder");
    }
}
