namespace Natten.Cli;

/// <summary>Boolean arrays (NumPy <c>|b1</c>, one byte per element, 0 or 1).</summary>
internal static partial class Npy
{
    /// <summary>Writes a boolean array ('|b1', C order) to <paramref name="path"/> (created or overwritten).</summary>
    public static void WriteBool(string path, IReadOnlyList<int> shape, ReadOnlySpan<bool> data)
    {
        using var stream = CreateFile(path);
        WriteHeader(stream, "|b1", shape, data.Length);
        var buffer = new byte[Math.Min(data.Length, ChunkElements)];
        for (var start = 0; start < data.Length; start += ChunkElements)
        {
            var chunk = data.Slice(start, Math.Min(ChunkElements, data.Length - start));
            for (var i = 0; i < chunk.Length; i++)
            {
                buffer[i] = chunk[i] ? (byte)1 : (byte)0;
            }

            stream.Write(buffer, 0, chunk.Length);
        }
    }
}
