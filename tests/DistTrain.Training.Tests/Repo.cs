namespace DistTrain.Training.Tests;

/// <summary>Paths inside the repository (configs/, the embedded corpus) from the test's bin folder.</summary>
static class Repo
{
    public static string Root { get; } = Find();

    public static string Config(string name) => Path.Combine(Root, "configs", name);

    static string Find()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "DistTrain.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("DistTrain.sln not found above " + AppContext.BaseDirectory);
    }
}

/// <summary>A temporary folder removed after the test.</summary>
sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("disttrain-test-").FullName;
    public string File(string name, string text)
    {
        var path = System.IO.Path.Combine(Path, name);
        System.IO.File.WriteAllText(path, text);
        return path;
    }
    public void Dispose() { try { Directory.Delete(Path, true); } catch (IOException) { } }
}
