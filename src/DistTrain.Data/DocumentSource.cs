using System.Text;
using System.Text.Json;

namespace DistTrain.Data;

/// <summary>
/// The documents of the prepare inputs, in input order. .txt/.text/.md: the whole file, or with splitOnBlankLines
/// each paragraph between blank lines (lines joined by "\n"). .jsonl: the string field textField of each
/// non-blank line. Documents of only whitespace are skipped. Line endings become "\n".
/// </summary>
static class DocumentSource
{
    static readonly string[] TextExtensions = [".txt", ".text", ".md"];
    const string JsonLinesExtension = ".jsonl";

    /// <summary>Checks every input before anything is read; returns their total size in bytes.</summary>
    public static long Check(IReadOnlyList<string> inputs)
    {
        if (inputs.Count == 0)
            throw new DataException("prepare has no inputs; pass --input FILE (repeatable) with .txt, .text, .md or .jsonl files");
        long bytes = 0;
        foreach (string input in inputs)
        {
            if (!File.Exists(input))
                throw new DataException($"input {input} does not exist{(Directory.Exists(input) ? " as a file (it is a folder: list its files with --input)" : "")}");
            string ext = Path.GetExtension(input).ToLowerInvariant();
            if (ext != JsonLinesExtension && !TextExtensions.Contains(ext))
                throw new DataException($"input {input}: unknown extension '{ext}'; use .txt, .text, .md (text) or .jsonl (one JSON object per line)");
            bytes += new FileInfo(input).Length;
        }
        return bytes;
    }

    /// <summary>The documents; bytesRead receives the input bytes consumed so far (approximate within a file).</summary>
    public static IEnumerable<string> Read(IReadOnlyList<string> inputs, string textField, bool splitOnBlankLines,
        Action<long> bytesRead, CancellationToken ct)
    {
        long done = 0;
        foreach (string input in inputs)
        {
            using var stream = new FileStream(input, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
            using var reader = new StreamReader(stream, Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
            IEnumerable<string> documents = Path.GetExtension(input).Equals(JsonLinesExtension, StringComparison.OrdinalIgnoreCase)
                ? JsonLines(input, reader, textField)
                : splitOnBlankLines ? Paragraphs(reader) : [reader.ReadToEnd().ReplaceLineEndings("\n")];
            foreach (string document in documents)
            {
                ct.ThrowIfCancellationRequested();
                bytesRead(done + stream.Position);
                if (!string.IsNullOrWhiteSpace(document)) yield return document;
            }
            done += stream.Length;
            bytesRead(done);
        }
    }

    static IEnumerable<string> Paragraphs(StreamReader reader)
    {
        var paragraph = new StringBuilder();
        while (reader.ReadLine() is { } line)
        {
            if (!string.IsNullOrWhiteSpace(line))
            {
                if (paragraph.Length > 0) paragraph.Append('\n');
                paragraph.Append(line);
                continue;
            }
            if (paragraph.Length > 0) yield return paragraph.ToString();
            paragraph.Clear();
        }
        if (paragraph.Length > 0) yield return paragraph.ToString();
    }

    static IEnumerable<string> JsonLines(string path, StreamReader reader, string textField)
    {
        long number = 0;
        while (reader.ReadLine() is { } line)
        {
            number++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            yield return TextOf(path, number, line, textField);
        }
    }

    static string TextOf(string path, long line, string json, string textField)
    {
        const string Fix = "pass --text-field NAME to use another field";
        try
        {
            using JsonDocument doc = JsonDocument.Parse(json);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new DataException($"{path}:{line}: a JSON {doc.RootElement.ValueKind.ToString().ToLowerInvariant()}, not an object with a \"{textField}\" string field");
            if (!doc.RootElement.TryGetProperty(textField, out JsonElement text))
            {
                string fields = string.Join(", ", doc.RootElement.EnumerateObject().Select(p => p.Name));
                throw new DataException($"{path}:{line}: no \"{textField}\" field (fields: {(fields.Length == 0 ? "none" : fields)}); {Fix}");
            }
            if (text.ValueKind != JsonValueKind.String)
                throw new DataException($"{path}:{line}: field \"{textField}\" is a {text.ValueKind.ToString().ToLowerInvariant()}, not a string; {Fix}");
            return text.GetString()!.ReplaceLineEndings("\n");
        }
        catch (JsonException e)
        {
            throw new DataException($"{path}:{line}: not valid JSON ({e.Message}); .jsonl needs one JSON object per line", e);
        }
    }
}
