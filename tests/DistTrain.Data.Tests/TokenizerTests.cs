namespace DistTrain.Data.Tests;

public class TokenizerTests
{
    [Fact]
    public void Byte_tokenizer_maps_utf8_bytes_and_round_trips()
    {
        ITokenizer t = TokenizerFactory.Create("byte");
        Assert.Equal((257, 256), (t.VocabSize, t.EndOfText));
        Assert.Equal([72, 105, 32, 195, 169], t.Encode("Hi é"));   // é = C3 A9
        const string text = "In the beginning — ἀρχῇ 🙂\n";
        Assert.Equal(text, t.Decode(t.Encode(text)));
        Assert.Equal("a<|endoftext|>b", t.Decode([97, 256, 98]));
    }

    [Fact]
    public void Cl100k_encodes_hello_world_to_the_known_ids()
    {
        ITokenizer t = TokenizerFactory.Create("cl100k_base");
        Assert.Equal([15339, 1917], t.Encode("hello world"));
        Assert.Equal((100277, 100257), (t.VocabSize, t.EndOfText));
        Assert.Equal("hello world", t.Decode([15339, 1917]));
    }

    [Fact]
    public void O200k_has_its_end_of_text_and_vocabulary_bound()
    {
        ITokenizer t = TokenizerFactory.Create("o200k_base");
        Assert.Equal((200019, 199999), (t.VocabSize, t.EndOfText));
        Assert.Equal("The grace of our Lord", t.Decode(t.Encode("The grace of our Lord")));
    }

    [Fact]
    public void Unknown_tokenizer_names_the_value_and_the_choices()
    {
        var e = Assert.Throws<ArgumentException>(() => TokenizerFactory.Create("gpt2"));
        Assert.Contains("'gpt2'", e.Message);
        Assert.Contains("byte, cl100k_base, o200k_base", e.Message);
    }
}
