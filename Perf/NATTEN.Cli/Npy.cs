using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

namespace Natten.Cli;

/// <summary>
/// NumPy .npy files (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html):
/// reads format 1.0, 2.0 and 3.0 little-endian float32/float16 C-order arrays; writes format 1.0
/// (2.0 only when the header would not fit 1.0's 16-bit length).
/// </summary>
/// <remarks>
/// Format errors throw <see cref="InvalidDataException"/>, file-system errors <see cref="IOException"/>;
/// the messages do not repeat the path, so callers can prefix it with the option it came from.
/// </remarks>
internal static partial class Npy
{
    private const int HeaderAlignment = 64;
    private const int ChunkElements = 1 << 16;

    private static ReadOnlySpan<byte> Magic => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>Reads the .npy file at <paramref name="path"/>.</summary>
    public static NpyArray Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path))
        {
            throw new IOException("is a directory, not a file.");
        }

        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
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

        using (stream)
        {
            return Read(stream);
        }
    }

    /// <summary>Reads one .npy array from the current position of <paramref name="stream"/>.</summary>
    public static NpyArray Read(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        Span<byte> preamble = stackalloc byte[12];
        if (stream.ReadAtLeast(preamble[..10], 10, throwOnEndOfStream: false) < 10 || !preamble[..6].SequenceEqual(Magic))
        {
            throw new InvalidDataException("not a .npy file (it does not start with the magic string \\x93NUMPY).");
        }

        int major = preamble[6], minor = preamble[7];
        int headerLength;
        Encoding encoding;
        switch ((major, minor))
        {
            case (1, 0):
                headerLength = BinaryPrimitives.ReadUInt16LittleEndian(preamble[8..10]);
                encoding = Encoding.Latin1;
                break;
            case (2, 0) or (3, 0):
                if (stream.ReadAtLeast(preamble[10..12], 2, throwOnEndOfStream: false) < 2)
                {
                    throw new InvalidDataException("truncated .npy header.");
                }

                var length = BinaryPrimitives.ReadUInt32LittleEndian(preamble[8..12]);
                if (length > 1 << 24)
                {
                    throw new InvalidDataException($"the .npy header claims {length} bytes; that is not a plausible array header.");
                }

                headerLength = (int)length;
                encoding = major == 3 ? Encoding.UTF8 : Encoding.Latin1;
                break;
            default:
                throw new InvalidDataException($".npy format version {major}.{minor} is not supported (1.0, 2.0 and 3.0 are).");
        }

        var headerBytes = new byte[headerLength];
        if (stream.ReadAtLeast(headerBytes, headerLength, throwOnEndOfStream: false) < headerLength)
        {
            throw new InvalidDataException("truncated .npy header.");
        }

        var (isFloat16, shape) = ParseHeader(encoding.GetString(headerBytes));
        var count = NpyArray.ElementCount(shape);
        if (isFloat16)
        {
            var data = new Half[count];
            ReadData(stream, data);
            return NpyArray.FromFloat16(shape, data);
        }
        else
        {
            var data = new float[count];
            ReadData(stream, data);
            return NpyArray.FromFloat32(shape, data);
        }
    }

    /// <summary>Writes a float32 array to <paramref name="path"/> (created or overwritten).</summary>
    public static void Write(string path, IReadOnlyList<int> shape, ReadOnlySpan<float> data)
    {
        using var stream = CreateFile(path);
        Write(stream, shape, data);
    }

    /// <summary>Writes a float16 array to <paramref name="path"/> (created or overwritten).</summary>
    public static void Write(string path, IReadOnlyList<int> shape, ReadOnlySpan<Half> data)
    {
        using var stream = CreateFile(path);
        Write(stream, shape, data);
    }

    /// <summary>Writes a float32 array ('&lt;f4', C order) to <paramref name="stream"/>.</summary>
    public static void Write(Stream stream, IReadOnlyList<int> shape, ReadOnlySpan<float> data)
    {
        WriteHeader(stream, "<f4", shape, data.Length);
        Span<byte> buffer = new byte[Math.Min(data.Length, ChunkElements) * sizeof(float)];
        for (var start = 0; start < data.Length; start += ChunkElements)
        {
            var chunk = data.Slice(start, Math.Min(ChunkElements, data.Length - start));
            for (var i = 0; i < chunk.Length; i++)
            {
                BinaryPrimitives.WriteSingleLittleEndian(buffer[(i * sizeof(float))..], chunk[i]);
            }

            stream.Write(buffer[..(chunk.Length * sizeof(float))]);
        }
    }

    /// <summary>Writes a float16 array ('&lt;f2', C order) to <paramref name="stream"/>.</summary>
    public static void Write(Stream stream, IReadOnlyList<int> shape, ReadOnlySpan<Half> data)
    {
        WriteHeader(stream, "<f2", shape, data.Length);
        Span<byte> buffer = new byte[Math.Min(data.Length, ChunkElements) * sizeof(short)];
        for (var start = 0; start < data.Length; start += ChunkElements)
        {
            var chunk = data.Slice(start, Math.Min(ChunkElements, data.Length - start));
            for (var i = 0; i < chunk.Length; i++)
            {
                BinaryPrimitives.WriteHalfLittleEndian(buffer[(i * sizeof(short))..], chunk[i]);
            }

            stream.Write(buffer[..(chunk.Length * sizeof(short))]);
        }
    }

    /// <summary>The header dictionary NumPy writes: <c>{'descr': '&lt;f4', 'fortran_order': False, 'shape': (2, 3), }</c>.</summary>
    internal static string FormatHeader(string descr, IReadOnlyList<int> shape)
        => $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {NpyArray.FormatShape(shape)}, }}";

    private static FileStream CreateFile(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path))
        {
            throw new IOException("is a directory, not a file.");
        }

        try
        {
            return new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
        }
        catch (DirectoryNotFoundException)
        {
            throw new IOException("directory not found.");
        }
        catch (UnauthorizedAccessException)
        {
            throw new IOException("permission denied.");
        }
    }

    private static void WriteHeader(Stream stream, string descr, IReadOnlyList<int> shape, int length)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(shape);
        if (NpyArray.ElementCount(shape) != length)
        {
            throw new ArgumentException($"shape {NpyArray.FormatShape(shape)} needs {NpyArray.ElementCount(shape)} elements, got {length}.", nameof(shape));
        }

        var dict = FormatHeader(descr, shape);

        // Magic, version and length take 10 bytes (12 from version 2.0); the dictionary is padded with
        // spaces and ends in '\n' so that the data starts on a 64-byte boundary.
        var version = dict.Length + 1 + 10 > ushort.MaxValue ? 2 : 1;
        var preamble = version == 1 ? 10 : 12;
        var total = preamble + dict.Length + 1;
        var padded = (total + HeaderAlignment - 1) / HeaderAlignment * HeaderAlignment;
        var header = dict + new string(' ', padded - total) + "\n";

        var bytes = new byte[padded];
        Magic.CopyTo(bytes);
        bytes[6] = (byte)version;
        bytes[7] = 0;
        if (version == 1)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(8), (ushort)header.Length);
        }
        else
        {
            BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(8), (uint)header.Length);
        }

        Encoding.Latin1.GetBytes(header, bytes.AsSpan(preamble));
        stream.Write(bytes);
    }

    /// <summary>Fills <paramref name="data"/> from little-endian bytes, in chunks (a span of bytes is limited to 2 GiB).</summary>
    private static void ReadData<T>(Stream stream, T[] data)
        where T : unmanaged
    {
        long total = 0;
        for (var start = 0; start < data.Length; start += ChunkElements)
        {
            var chunk = data.AsSpan(start, Math.Min(ChunkElements, data.Length - start));
            var bytes = MemoryMarshal.AsBytes(chunk);
            var read = stream.ReadAtLeast(bytes, bytes.Length, throwOnEndOfStream: false);
            total += read;
            if (read < bytes.Length)
            {
                throw new InvalidDataException(
                    $"truncated .npy data: the header promises {data.Length} elements "
                  + $"({(long)data.Length * (bytes.Length / chunk.Length)} bytes) but only {total} bytes follow.");
            }

            if (!BitConverter.IsLittleEndian)
            {
                if (bytes.Length == chunk.Length * sizeof(int))
                {
                    var raw = MemoryMarshal.Cast<byte, int>(bytes);
                    BinaryPrimitives.ReverseEndianness(raw, raw);
                }
                else
                {
                    var raw = MemoryMarshal.Cast<byte, short>(bytes);
                    BinaryPrimitives.ReverseEndianness(raw, raw);
                }
            }
        }
    }

    /// <summary>Checks the header dictionary and returns the element type and shape.</summary>
    internal static (bool IsFloat16, int[] Shape) ParseHeader(string header)
    {
        if (PythonLiteral.Parse(header) is not Dictionary<string, object?> dict)
        {
            throw new InvalidDataException("the .npy header is not a Python dict.");
        }

        foreach (var key in new[] { "descr", "fortran_order", "shape" })
        {
            if (!dict.ContainsKey(key))
            {
                throw new InvalidDataException($"the .npy header has no '{key}'.");
            }
        }

        var isFloat16 = dict["descr"] switch
        {
            "<f4" => false,
            "<f2" => true,
            ">f4" or ">f2" => throw new InvalidDataException(
                $"dtype '{dict["descr"]}' is big-endian; only little-endian float32 ('<f4') and float16 ('<f2') are supported."),
            string other => throw new InvalidDataException(
                $"dtype '{other}' is not supported; only float32 ('<f4') and float16 ('<f2') are (convert with arr.astype(np.float32))."),
            _ => throw new InvalidDataException("structured dtypes are not supported; only float32 ('<f4') and float16 ('<f2') are."),
        };

        switch (dict["fortran_order"])
        {
            case false:
                break;
            case true:
                throw new InvalidDataException(
                    "the array is stored in Fortran (column-major) order; save a C-ordered one (np.ascontiguousarray).");
            default:
                throw new InvalidDataException("the .npy header's 'fortran_order' is not True or False.");
        }

        if (dict["shape"] is not List<object?> dims)
        {
            throw new InvalidDataException("the .npy header's 'shape' is not a tuple.");
        }

        var shape = new int[dims.Count];
        for (var i = 0; i < dims.Count; i++)
        {
            shape[i] = dims[i] is long d and >= 0 and <= int.MaxValue
                ? (int)d
                : throw new InvalidDataException($"the .npy header's shape has an invalid dimension '{dims[i]}'.");
        }

        return (isFloat16, shape);
    }

    /// <summary>
    /// The subset of Python literal syntax .npy headers use: dicts, tuples, lists, strings, ints,
    /// True/False/None. Tuples and lists become <see cref="List{T}"/>.
    /// </summary>
    private ref struct PythonLiteral
    {
        private readonly string _text;
        private int _pos;

        private PythonLiteral(string text) => _text = text;

        public static object? Parse(string text)
        {
            var parser = new PythonLiteral(text);
            var value = parser.ParseValue();
            parser.SkipWhitespace();
            if (parser._pos != text.Length)
            {
                throw parser.Error("unexpected text after the dict");
            }

            return value;
        }

        private object? ParseValue()
        {
            SkipWhitespace();
            if (_pos >= _text.Length)
            {
                throw Error("unexpected end");
            }

            var c = _text[_pos];
            switch (c)
            {
                case '{':
                    return ParseDict();
                case '(':
                    return ParseSequence(')');
                case '[':
                    return ParseSequence(']');
                case '\'' or '"':
                    return ParseString();
                default:
                    if (c == '-' || c == '+' || char.IsAsciiDigit(c))
                    {
                        return ParseInteger();
                    }

                    if (char.IsAsciiLetter(c))
                    {
                        var start = _pos;
                        while (_pos < _text.Length && (char.IsAsciiLetterOrDigit(_text[_pos]) || _text[_pos] == '_'))
                        {
                            _pos++;
                        }

                        return _text[start.._pos] switch
                        {
                            "True" => true,
                            "False" => false,
                            "None" => null,
                            var word => throw Error($"unexpected word '{word}'"),
                        };
                    }

                    throw Error($"unexpected character '{c}'");
            }
        }

        private Dictionary<string, object?> ParseDict()
        {
            _pos++;
            var dict = new Dictionary<string, object?>(StringComparer.Ordinal);
            while (true)
            {
                SkipWhitespace();
                if (TryConsume('}'))
                {
                    return dict;
                }

                if (ParseValue() is not string key)
                {
                    throw Error("dict keys must be strings");
                }

                SkipWhitespace();
                if (!TryConsume(':'))
                {
                    throw Error("expected ':'");
                }

                if (!dict.TryAdd(key, ParseValue()))
                {
                    throw Error($"key '{key}' appears twice");
                }

                SkipWhitespace();
                if (!TryConsume(','))
                {
                    SkipWhitespace();
                    if (!TryConsume('}'))
                    {
                        throw Error("expected ',' or '}'");
                    }

                    return dict;
                }
            }
        }

        private List<object?> ParseSequence(char close)
        {
            _pos++;
            var items = new List<object?>();
            while (true)
            {
                SkipWhitespace();
                if (TryConsume(close))
                {
                    return items;
                }

                items.Add(ParseValue());
                SkipWhitespace();
                if (!TryConsume(','))
                {
                    SkipWhitespace();
                    if (!TryConsume(close))
                    {
                        throw Error($"expected ',' or '{close}'");
                    }

                    return items;
                }
            }
        }

        private string ParseString()
        {
            var quote = _text[_pos++];
            var builder = new StringBuilder();
            while (_pos < _text.Length && _text[_pos] != quote)
            {
                if (_text[_pos] == '\\' && _pos + 1 < _text.Length)
                {
                    _pos++;
                }

                builder.Append(_text[_pos++]);
            }

            if (!TryConsume(quote))
            {
                throw Error("unterminated string");
            }

            return builder.ToString();
        }

        private long ParseInteger()
        {
            var start = _pos;
            if (_text[_pos] is '-' or '+')
            {
                _pos++;
            }

            while (_pos < _text.Length && char.IsAsciiDigit(_text[_pos]))
            {
                _pos++;
            }

            var digits = _text[start.._pos];

            // Python 2 wrote long integers with an 'L' suffix.
            if (_pos < _text.Length && _text[_pos] is 'L' or 'l')
            {
                _pos++;
            }

            return long.TryParse(digits, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value)
                ? value
                : throw Error($"'{digits}' is not an integer");
        }

        private void SkipWhitespace()
        {
            while (_pos < _text.Length && char.IsWhiteSpace(_text[_pos]))
            {
                _pos++;
            }
        }

        private bool TryConsume(char c)
        {
            if (_pos < _text.Length && _text[_pos] == c)
            {
                _pos++;
                return true;
            }

            return false;
        }

        private readonly InvalidDataException Error(string what)
            => new($"the .npy header is not a valid Python literal ({what} at offset {_pos}).");
    }
}
