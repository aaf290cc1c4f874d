using System.Text.Json;

namespace DistTrain.Cli.Tests;

/// <summary>A tiny MUDDFormer checkpoint trained once for the generate tests (10 steps, byte tokenizer from the KJV corpus).</summary>
public sealed class TinyCheckpoint : IDisposable
{
    readonly TempFolder _dir = new();

    public TinyCheckpoint()
    {
        var (code, output) = CheckpointTests.Train(_dir.Path, "gen", 1, "--set", "train.steps=10");
        Assert.True(code == 0, output);
        Root = Path.Combine(_dir.Path, "ckpt-gen");
        Step = Path.Combine(Root, "step-00000010");
    }

    /// <summary>checkpoint.dir: its latest is <see cref="Step"/>.</summary>
    public string Root { get; }
    public string Step { get; }
    public string Folder => _dir.Path;

    public void Dispose() => _dir.Dispose();
}

/// <summary>disttrain generate through the executable: greedy equals score's argmax, seeds repeat, errors are one line.</summary>
public class GenerateTests(TinyCheckpoint checkpoint) : IClassFixture<TinyCheckpoint>
{
    static readonly TimeSpan Limit = CheckpointTests.Limit;
    const int Vocab = 264;   // the tiny size's vocab_size

    static JsonElement Json(string output) => JsonDocument.Parse(output.Split('\n').Single(l => l.StartsWith('{'))).RootElement;

    [Fact]
    public void GreedyOutputIsTheArgmaxOfScoresLogProbabilitiesStepByStep()
    {
        var (code, output) = Disttrain.Run(Limit, "generate", "--checkpoint", checkpoint.Step, "--prompt", "And God said", "--max-tokens", "6", "--temperature", "0", "--json");
        Assert.True(code == 0, output);
        var result = Json(output);
        long[] prompt = [.. result.GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt64())];
        long[] ids = [.. result.GetProperty("ids").EnumerateArray().Select(e => e.GetInt64())];
        Assert.Equal("And God said"u8.ToArray().Select(b => (long)b), prompt);
        Assert.Equal(6, ids.Length);

        // step i: score every candidate v after prompt + ids[..i]; the greedy token must have the highest log-probability
        var input = Path.Combine(checkpoint.Folder, $"candidates-{Guid.NewGuid():N}.jsonl");
        File.WriteAllLines(input, Enumerable.Range(0, ids.Length).SelectMany(i => Enumerable.Range(0, Vocab).Select(v =>
            JsonSerializer.Serialize(new { tokens = prompt.Concat(ids[..i]).Append(v) }))));
        var scored = input + ".out";
        var (scoreCode, scoreText) = Disttrain.Run(Limit, "score", "--checkpoint", checkpoint.Step, "--input", input, "--out", scored);
        Assert.True(scoreCode == 0, scoreText);
        var last = File.ReadLines(scored).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("logprobs").EnumerateArray().Last().GetDouble()).ToArray();
        for (int i = 0; i < ids.Length; i++)
        {
            var step = last[(i * Vocab)..((i + 1) * Vocab)];
            int argmax = Array.IndexOf(step, step.Max());
            Assert.True(argmax == ids[i], $"step {i}: generate chose {ids[i]} (log p {step[ids[i]]:F5}), score's argmax is {argmax} (log p {step[argmax]:F5})");
        }
    }

    [Fact]
    public void TheSameSeedPrintsTheSameTextAndTheRootMeansItsLatest()
    {
        string[] args = ["generate", "--checkpoint", checkpoint.Root, "--prompt", "In the beginning", "--max-tokens", "40", "--temperature", "1", "--seed", "7"];
        var (code, first) = Disttrain.Run(Limit, args);
        Assert.True(code == 0, first);
        var (againCode, again) = Disttrain.Run(Limit, args);
        Assert.True(againCode == 0, again);
        var (otherCode, other) = Disttrain.Run(Limit, [.. args[..^1], "8"]);
        Assert.True(otherCode == 0, other);

        // stdout is the text; the one line on stderr says how many tokens, from which step (the two streams may interleave by line)
        static string Text(string output) => string.Join('\n', output.Split('\n').Where(l => !l.Contains(" tokens in ", StringComparison.Ordinal)));
        Assert.StartsWith("In the beginning", Text(first));
        Assert.Contains("40 tokens in ", first);
        Assert.Contains("(step 10, byte, stopped at max tokens)", first);
        Assert.Equal(Text(first), Text(again));
        Assert.NotEqual(Text(first), Text(other));

        // the text printed as it is sampled is the whole decoded text (bytes of one character may arrive over several tokens)
        var (jsonCode, json) = Disttrain.Run(Limit, [.. args, "--json"]);
        Assert.True(jsonCode == 0, json);
        var whole = "In the beginning" + Json(json).GetProperty("text").GetString() + "\n";
        Assert.Equal(whole.Replace("\r\n", "\n").Replace('\r', '\n'), Text(first));   // the test reads lines: \r ends one too
    }

    [Fact]
    public void JsonCarriesTheIdsAndTheirText()
    {
        var (code, output) = Disttrain.Run(Limit, "generate", "--checkpoint", checkpoint.Step, "--prompt", "Let there be", "-n", "12", "--seed", "3", "--top-k", "5", "--json");
        Assert.True(code == 0, output);
        var result = Json(output);
        Assert.Equal("Let there be", result.GetProperty("prompt").GetString());
        var ids = result.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(12, ids.Length);
        Assert.All(ids, id => Assert.InRange(id, 0, 255));   // bytes, as the run's byte tokenizer; no end-of-text here
        Assert.Equal(System.Text.Encoding.UTF8.GetString([.. ids.Select(i => (byte)i)]), result.GetProperty("text").GetString());
        Assert.Equal("max_tokens", result.GetProperty("stopped").GetString());
    }

    public static TheoryData<string[], string> Errors() => new()
    {
        { ["--checkpoint", "{dir}/missing", "--prompt", "x"], "--checkpoint {dir}/missing: no such folder; pass a checkpoint (checkpoint.dir/step-NNNNNNNN) or checkpoint.dir for its latest" },
        { ["--checkpoint", "{dir}", "--prompt", "x"], "--checkpoint {dir}: neither a checkpoint (no manifest.json) nor a checkpoint.dir with a latest; pass a step-NNNNNNNN folder" },
        { ["--checkpoint", "{step}", "--prompt", ""], "--prompt: empty; give the text to continue" },
        { ["--checkpoint", "{step}", "--prompt", new string('a', 257)], "--prompt: 257 tokens (byte), more than the model's block_size 256; shorten the prompt" },
        { ["--checkpoint", "{step}", "--prompt", "x", "--max-tokens", "0"], "--max-tokens 0: give a whole number of at least 1" },
        { ["--checkpoint", "{step}", "--prompt", "x", "--max-tokens", "ten"], "--max-tokens ten: give a whole number of at least 1" },
        { ["--checkpoint", "{step}", "--prompt", "x", "--temperature", "-0.5"], "--temperature -0.5: give a number of at least 0" },
        { ["--checkpoint", "{step}", "--prompt", "x", "--temperature", "inf"], "--temperature inf: give a number of at least 0" },
        { ["--checkpoint", "{step}", "--prompt", "x", "--top-k", "1.5"], "--top-k 1.5: give a whole number of at least 0" },
        { ["--checkpoint", "{step}", "--prompt", "x", "--seed", "-1"], "--seed -1: give a whole number of at least 0" },
        { ["--checkpoint", "{step}", "--prompt", "x", "--tokenizer", "gpt2"], "--tokenizer gpt2: not known; use one of byte, cl100k_base, o200k_base" },
        { ["--checkpoint", "{step}", "--prompt", "x", "--tokenizer", "cl100k_base"], "--tokenizer cl100k_base: 100277 ids, the model's vocab_size is 264; pass the --tokenizer the run was trained with" },
    };

    [Theory]
    [MemberData(nameof(Errors))]
    public void ErrorsAreOneLineNamingTheOptionWithExitCode2(string[] args, string message)
    {
        string Fill(string s) => s.Replace("{dir}", checkpoint.Folder).Replace("{step}", checkpoint.Step);
        var (code, output) = Disttrain.Run(Limit, ["generate", .. args.Select(Fill)]);
        Assert.True(code == 2, $"exit {code}: {output}");
        Assert.Contains(Fill(message), output);
        Assert.DoesNotContain("   at ", output);   // a sentence, not a stack trace
        Assert.Single(output.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }
}
