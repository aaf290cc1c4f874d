using System.CommandLine;
using DistTrain.Data;
using Spectre.Console;

namespace DistTrain.Cli.Commands;

/// <summary>disttrain prepare --input X... --tokenizer T --out DIR: text or JSONL to tokenized Parquet shards.</summary>
static class PrepareCommand
{
    public static Command Create()
    {
        var input = new Option<string[]>("--input", "-i") { Description = "text file(s) (one document each) or JSONL file(s) (one document per line)", Required = true, AllowMultipleArgumentsPerToken = true };
        var tokenizer = new Option<string>("--tokenizer", "-t") { Description = "byte, cl100k_base or o200k_base", DefaultValueFactory = _ => "byte" };
        var output = new Option<string>("--out", "-o") { Description = "output folder (must not exist or be empty)", Required = true };
        var valFraction = new Option<double>("--val-fraction") { Description = "share of documents for the validation split", DefaultValueFactory = _ => 0.05 };
        var textField = new Option<string>("--text-field") { Description = "JSONL field holding the text", DefaultValueFactory = _ => "text" };
        var splitBlank = new Option<bool>("--split-on-blank-lines") { Description = "text files: one document per blank-line-separated paragraph" };
        var command = new Command("prepare", "tokenize text into Parquet shards (one document per row, column input_ids)")
            { input, tokenizer, output, valFraction, textField, splitBlank };
        command.SetAction(parse =>
        {
            var options = new PrepareOptions(parse.GetValue(input)!, parse.GetValue(tokenizer)!, parse.GetValue(output)!,
                parse.GetValue(valFraction), parse.GetValue(textField)!, SplitOnBlankLines: parse.GetValue(splitBlank));
            PrepareResult? result = null;
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask("tokenizing", maxValue: 1);
                    result = ParquetPreparer.Run(options, new Progress<PrepareProgress>(p =>
                    {
                        task.MaxValue = Math.Max(1, p.BytesTotal);
                        task.Value = p.BytesRead;
                        task.Description = $"{p.Documents:N0} docs, {p.Tokens:N0} tokens";
                    }));
                    task.Value = task.MaxValue;
                });
            AnsiConsole.MarkupLineInterpolated($"train: {result!.TrainDocuments:N0} documents, {result.TrainTokens:N0} tokens; validation: {result.ValDocuments:N0} documents, {result.ValTokens:N0} tokens");
            AnsiConsole.MarkupLineInterpolated($"wrote {result.Files.Count} files under [bold]{result.OutDir}[/]");
            return 0;
        });
        return command;
    }
}
