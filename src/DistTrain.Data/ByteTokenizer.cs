using System.Text;

namespace DistTrain.Data;

/// <summary>
/// UTF-8 bytes as tokens: ids 0..255 are the bytes, 256 is end-of-text. No vocabulary file, no merges;
/// the tokenizer for tiny models and for tests.
/// </summary>
public sealed class ByteTokenizer : ITokenizer
{
    public const string TokenizerName = "byte";
    public const int EndOfTextId = 256;
    const string EndOfTextText = "<|endoftext|>";   // how Decode shows id 256, as tiktoken shows its special

    public string Name => TokenizerName;
    public int VocabSize => EndOfTextId + 1;
    public int EndOfText => EndOfTextId;

    public IReadOnlyList<int> Encode(string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        var ids = new int[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) ids[i] = bytes[i];
        return ids;
    }

    public string Decode(IEnumerable<int> ids)
    {
        var text = new StringBuilder();
        var run = new List<byte>();   // bytes since the last end-of-text: a UTF-8 sequence may span tokens
        foreach (int id in ids)
        {
            if (id is >= 0 and < 256) { run.Add((byte)id); continue; }
            if (id != EndOfTextId)
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"byte tokenizer ids are 0..256; got {id}");
            text.Append(Encoding.UTF8.GetString(run.ToArray())).Append(EndOfTextText);
            run.Clear();
        }
        return text.Append(Encoding.UTF8.GetString(run.ToArray())).ToString();
    }
}
