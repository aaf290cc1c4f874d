namespace DistTrain.Data.Tests;

public class DatasetFilesTests
{
    [Fact]
    public void Resolves_files_folders_and_globs_in_ordinal_order()
    {
        using var dir = new TempDir();
        foreach (string f in new[] { "d/train/part-00001.parquet", "d/train/part-00000.parquet", "d/train/B.parquet", "d/val/part-00000.parquet", "d/notes.txt" })
        {
            Directory.CreateDirectory(Path.GetDirectoryName(dir[f])!);
            File.WriteAllText(dir[f], "");
        }

        Assert.Equal([dir["d/train/part-00000.parquet"]], DatasetFiles.Resolve(dir["d/train/part-00000.parquet"]));
        Assert.Equal([dir["d/train/B.parquet"], dir["d/train/part-00000.parquet"], dir["d/train/part-00001.parquet"]],
            DatasetFiles.Resolve(dir["d/train"]));
        Assert.Equal([dir["d/train/part-00000.parquet"], dir["d/val/part-00000.parquet"]], DatasetFiles.Resolve(dir["d/*/part-00000.parquet"]));
        Assert.Equal(4, DatasetFiles.Resolve(dir["d/**/*.parquet"]).Count);
        Assert.Equal([dir["d/train/part-00001.parquet"]], DatasetFiles.Resolve(dir["d/train/part-0000?.parquet"]).Skip(1));
    }

    [Fact]
    public void Nothing_found_names_the_path()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir["empty"]);
        Assert.Contains($"no Parquet files at {dir["empty"]}", Assert.Throws<DataException>(() => DatasetFiles.Resolve(dir["empty"])).Message);
        Assert.Contains("does not exist", Assert.Throws<DataException>(() => DatasetFiles.Resolve(dir["missing"])).Message);
        Assert.Contains($"no Parquet files at {dir["*.parquet"]}", Assert.Throws<DataException>(() => DatasetFiles.Resolve(dir["*.parquet"])).Message);
    }
}
