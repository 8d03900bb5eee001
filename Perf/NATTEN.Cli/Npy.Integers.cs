using System.Buffers.Binary;
using System.Text;

namespace Natten.Cli;

internal static partial class Npy
{
    /// <summary>
    /// Reads a .npy array of integral values — masks and segment ids: bool (<c>|b1</c>), uint8
    /// (<c>|u1</c>), int32 (<c>&lt;i4</c>), int64 (<c>&lt;i8</c>) or float32 (<c>&lt;f4</c>, whose values must be whole numbers).
    /// </summary>
    /// <exception cref="InvalidDataException">Not a .npy file, another dtype, Fortran order, truncated data or a fractional float.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static (int[] Shape, long[] Values) ReadIntegers(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (FileNotFoundException)
        {
            throw new IOException("file not found.");
        }
        catch (DirectoryNotFoundException)
        {
            throw new IOException("directory not found.");
        }
        catch (UnauthorizedAccessException)
        {
            throw new IOException("permission denied.");
        }

        if (bytes.Length < 10 || !bytes.AsSpan(0, 6).SequenceEqual(Magic))
        {
            throw new InvalidDataException("not a .npy file (it does not start with the magic string \\x93NUMPY).");
        }

        var (headerLength, start, encoding) = bytes[6] switch
        {
            1 => (BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(8)), 10, Encoding.Latin1),
            2 or 3 when bytes.Length >= 12 => ((int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(8)), int.MaxValue), 12,
                bytes[6] == 3 ? Encoding.UTF8 : Encoding.Latin1),
            _ => throw new InvalidDataException($".npy format version {bytes[6]}.{bytes[7]} is not supported (1.0, 2.0 and 3.0 are)."),
        };
        if (start + headerLength > bytes.Length)
        {
            throw new InvalidDataException("truncated .npy header.");
        }

        if (PythonLiteral.Parse(encoding.GetString(bytes, start, headerLength)) is not Dictionary<string, object?> dict
            || !dict.TryGetValue("descr", out var descr) || !dict.TryGetValue("shape", out var shapeValue) || shapeValue is not List<object?> dims)
        {
            throw new InvalidDataException("the .npy header is not a dict with 'descr' and 'shape'.");
        }

        if (dict.TryGetValue("fortran_order", out var fortran) && fortran is true)
        {
            throw new InvalidDataException("the array is stored in Fortran (column-major) order; save a C-ordered one (np.ascontiguousarray).");
        }

        var shape = new int[dims.Count];
        for (var i = 0; i < dims.Count; i++)
        {
            shape[i] = dims[i] is long d and >= 0 and <= int.MaxValue
                ? (int)d
                : throw new InvalidDataException($"the .npy header's shape has an invalid dimension '{dims[i]}'.");
        }

        var count = NpyArray.ElementCount(shape);
        var size = descr switch
        {
            "|b1" or "|u1" or "<u1" => 1,
            "<i4" or "<f4" => 4,
            "<i8" => 8,
            _ => throw new InvalidDataException(
                $"dtype '{descr}' is not supported here; masks and ids are bool, uint8, int32, int64 or float32 (convert with arr.astype(np.int32))."),
        };
        var data = bytes.AsSpan(start + headerLength);
        if (data.Length < (long)count * size)
        {
            throw new InvalidDataException($"truncated .npy data: the header promises {count} elements ({(long)count * size} bytes) but only {data.Length} bytes follow.");
        }

        var values = new long[count];
        for (var i = 0; i < count; i++)
        {
            values[i] = descr switch
            {
                "<i4" => BinaryPrimitives.ReadInt32LittleEndian(data[(i * 4)..]),
                "<i8" => BinaryPrimitives.ReadInt64LittleEndian(data[(i * 8)..]),
                "<f4" => Whole(BinaryPrimitives.ReadSingleLittleEndian(data[(i * 4)..]), i),
                _ => data[i],
            };
        }

        return (shape, values);

        static long Whole(float value, int index)
            => float.IsFinite(value) && value == MathF.Round(value) && Math.Abs(value) < 1e15f
                ? (long)value
                : throw new InvalidDataException($"element {index} is {value}; this array must hold whole numbers (0/1 for a mask).");
    }
}
