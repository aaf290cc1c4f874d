using System.Text;
using System.Text.RegularExpressions;

namespace DistTrain.Data;

/// <summary>Turns data.path into the ordered file list that <see cref="TokenWindowReader"/> reads.</summary>
public static class DatasetFiles
{
    /// <summary>
    /// A file: itself. A folder: every *.parquet below it. A glob (*, ?, ** for any folders): the files it matches.
    /// Full paths, sorted ordinally so every rank and every resume sees the same order.
    /// A folder written by `disttrain prepare` holds train/ and val/: pass one of those, not the root.
    /// </summary>
    public static IReadOnlyList<string> Resolve(string pathOrDir)
    {
        if (string.IsNullOrWhiteSpace(pathOrDir))
            throw new DataException("data path is empty; give a .parquet file, a folder of them or a glob such as data/train/*.parquet");

        string[] found;
        if (File.Exists(pathOrDir))
            found = [Path.GetFullPath(pathOrDir)];
        else if (Directory.Exists(pathOrDir))
            found = Directory.EnumerateFiles(pathOrDir, "*.parquet", SearchOption.AllDirectories).Select(Path.GetFullPath).ToArray();
        else if (pathOrDir.IndexOfAny(['*', '?']) >= 0)
            found = Glob(pathOrDir);
        else
            throw new DataException($"data path {pathOrDir} does not exist; give a .parquet file, a folder of them or a glob");

        if (found.Length == 0)
            throw new DataException($"no Parquet files at {pathOrDir}; create them with `disttrain prepare` or fix the path");
        Array.Sort(found, StringComparer.Ordinal);
        return found;
    }

    static string[] Glob(string pattern)
    {
        string normalized = pattern.Replace('\\', '/');
        int wildcard = normalized.IndexOfAny(['*', '?']);
        int slash = normalized.LastIndexOf('/', wildcard);
        string root = slash < 0 ? "." : normalized[..slash];
        if (root.Length == 0) root = "/";
        string relative = normalized[(slash + 1)..];
        if (!Directory.Exists(root))
            throw new DataException($"data path {pattern}: folder {root} does not exist");

        var match = new Regex("^" + GlobToRegex(relative) + "$", RegexOptions.CultureInvariant);
        return Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
            .Where(f => match.IsMatch(Path.GetRelativePath(root, f).Replace('\\', '/')))
            .Select(Path.GetFullPath)
            .ToArray();
    }

    // "**/" any folders (none included), "*" within one name, "?" one character
    static string GlobToRegex(string glob)
    {
        var re = new StringBuilder();
        for (int i = 0; i < glob.Length; i++)
        {
            char c = glob[i];
            if (c == '*' && i + 1 < glob.Length && glob[i + 1] == '*')
            {
                bool folder = i + 2 < glob.Length && glob[i + 2] == '/';
                re.Append(folder ? "(?:.*/)?" : ".*");
                i += folder ? 2 : 1;
            }
            else if (c == '*') re.Append("[^/]*");
            else if (c == '?') re.Append("[^/]");
            else re.Append(Regex.Escape(c.ToString()));
        }
        return re.ToString();
    }
}
