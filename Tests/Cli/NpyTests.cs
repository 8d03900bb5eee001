using System.Buffers.Binary;
using System.Text;
using Natten.Cli;

namespace Natten.Tests.Cli;

/// <summary>The .npy reader/writer, against byte layouts built here from the format spec.</summary>
[TestFixture]
public sealed class NpyTests
{
    private static readonly int[][] _shapes = [[2, 3], [5], [], [0, 3], [2, 3, 4, 5], [1, 7, 1], [3000, 7]];

    [TestCaseSource(nameof(_shapes))]
    public void Float32RoundTrip(int[] shape)
    {
        var count = shape.Aggregate(1, (a, b) => a * b);
        var rng = new Random(count);
        var data = Enumerable.Range(0, count).Select(_ => (rng.NextSingle() * 200) - 100).ToArray();
        if (count > 2)
        {
            data[0] = float.NaN;
            data[1] = float.NegativeInfinity;
            data[2] = -0.0f;
        }

        using var stream = new MemoryStream();
        Npy.Write(stream, shape, data);
        var bytes = stream.ToArray();

        // Version 1.0, a 16-bit header length, data on a 64-byte boundary, header ending in '\n'.
        var headerLength = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(8));
        var header = Encoding.Latin1.GetString(bytes, 10, headerLength);
        var shapeText = shape.Length == 1 ? $"({shape[0]},)" : $"({string.Join(", ", shape)})";
        using (Assert.EnterMultipleScope())
        {
            Assert.That(bytes.AsSpan(0, 8).ToArray(), Is.EqualTo(new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0 }));
            Assert.That((10 + headerLength) % 64, Is.Zero);
            Assert.That(header, Does.StartWith($"{{'descr': '<f4', 'fortran_order': False, 'shape': {shapeText}, }}"));
            Assert.That(header, Does.EndWith("\n"));
            Assert.That(header.TrimEnd(), Does.EndWith("}"));
            Assert.That(bytes, Has.Length.EqualTo(10 + headerLength + (4 * count)));
        }

        stream.Position = 0;
        var read = Npy.Read(stream);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(read.Shape, Is.EqualTo(shape));
            Assert.That(read.IsFloat16, Is.False);
            Assert.That(read.Float32Data, Is.EqualTo(data));
        }
    }

    [Test]
    public void Float32ExactBytesForArange()
    {
        // np.save of np.arange(6, dtype='<f4').reshape(2, 3) (numpy before the header growth padding).
        var dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        var expected = new List<byte> { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0, 118, 0 };
        expected.AddRange(Encoding.ASCII.GetBytes(dict + new string(' ', 58) + "\n"));
        for (var i = 0; i < 6; i++)
        {
            expected.AddRange(BitConverter.GetBytes((float)i));
        }

        using var stream = new MemoryStream();
        Npy.Write(stream, [2, 3], [0f, 1f, 2f, 3f, 4f, 5f]);
        Assert.That(stream.ToArray(), Is.EqualTo(expected.ToArray()));
    }

    [Test]
    public void Float16WriteReadRoundTrip()
    {
        Half[] data = [(Half)1, (Half)(-2.5f), Half.MaxValue, Half.Epsilon, (Half)0.333f, Half.NegativeInfinity];
        using var stream = new MemoryStream();
        Npy.Write(stream, [2, 3], data);
        stream.Position = 0;
        var read = Npy.Read(stream);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(read.IsFloat16, Is.True);
            Assert.That(read.Float16Data, Is.EqualTo(data));
            Assert.That(read.ToFloat32(), Is.EqualTo(data.Select(h => (float)h).ToArray()));
        }
    }

    [Test]
    public void ReadsHandBuiltFloat16File()
    {
        // 1.0, -2.0, 0.5, 65504 as IEEE half bit patterns.
        ushort[] bits = [0x3C00, 0xC000, 0x3800, 0x7BFF];
        var data = bits.SelectMany(b => new[] { (byte)(b & 0xFF), (byte)(b >> 8) }).ToArray();
        var file = Build(1, 0, "{'descr': '<f2', 'fortran_order': False, 'shape': (4,), }", data);
        var read = Npy.Read(new MemoryStream(file));
        using (Assert.EnterMultipleScope())
        {
            Assert.That(read.Shape, Is.EqualTo(new[] { 4 }));
            Assert.That(read.IsFloat16, Is.True);
            Assert.That(read.ToFloat32(), Is.EqualTo(new[] { 1f, -2f, 0.5f, 65504f }));
        }
    }

    [TestCase(2)]
    [TestCase(3)]
    public void ReadsVersion2And3Headers(int major)
    {
        float[] values = [1.5f, -2f, 3.25f, 0f, 7f, -0.125f];
        var data = values.SelectMany(BitConverter.GetBytes).ToArray();
        var file = Build(major, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", data);
        var read = Npy.Read(new MemoryStream(file));
        using (Assert.EnterMultipleScope())
        {
            Assert.That(read.Shape, Is.EqualTo(new[] { 3, 2 }));
            Assert.That(read.Float32Data, Is.EqualTo(values));
        }
    }

    [Test]
    public void ParsesLooseButValidHeaders()
    {
        // Reordered keys, double quotes, Python 2 long suffixes, odd whitespace, no trailing comma.
        var (isFloat16, shape) = Npy.ParseHeader("{ \"shape\" : ( 2L ,3L ) ,'fortran_order':False,  'descr':\"<f4\"}   \n");
        using (Assert.EnterMultipleScope())
        {
            Assert.That(isFloat16, Is.False);
            Assert.That(shape, Is.EqualTo(new[] { 2, 3 }));
        }
    }

    [Test]
    public void ScalarShape()
    {
        var file = Build(1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", BitConverter.GetBytes(42f));
        var read = Npy.Read(new MemoryStream(file));
        using (Assert.EnterMultipleScope())
        {
            Assert.That(read.Shape, Is.Empty);
            Assert.That(read.Float32Data, Is.EqualTo(new[] { 42f }));
        }
    }

    private static IEnumerable<TestCaseData> BadFiles()
    {
        var f4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
        var data = new byte[16];
        yield return new TestCaseData(Encoding.ASCII.GetBytes("PK\x03\x04 not numpy at all"), "magic").SetName("BadMagic");
        yield return new TestCaseData(Array.Empty<byte>(), "magic").SetName("EmptyFile");
        yield return new TestCaseData(Build(1, 0, f4.Replace("<f4", "<f8", StringComparison.Ordinal), new byte[32]), "'<f8' is not supported").SetName("Float64");
        yield return new TestCaseData(Build(1, 0, f4.Replace("<f4", "<i4", StringComparison.Ordinal), data), "'<i4' is not supported").SetName("Int32");
        yield return new TestCaseData(Build(1, 0, f4.Replace("<f4", ">f4", StringComparison.Ordinal), data), "big-endian").SetName("BigEndian");
        yield return new TestCaseData(Build(1, 0, f4.Replace("False", "True", StringComparison.Ordinal), data), "Fortran").SetName("FortranOrder");
        yield return new TestCaseData(Build(1, 0, f4, new byte[15]), "truncated").SetName("TruncatedData");
        yield return new TestCaseData(Build(1, 0, f4, data)[..40], "truncated").SetName("TruncatedHeader");
        yield return new TestCaseData(Build(4, 0, f4, data), "version 4.0").SetName("UnknownVersion");
        yield return new TestCaseData(Build(1, 0, "{'descr': '<f4', 'fortran_order': False, }", data), "no 'shape'").SetName("MissingShape");
        yield return new TestCaseData(Build(1, 0, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", data), "structured").SetName("StructuredDtype");
        yield return new TestCaseData(Build(1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -2), }", data), "dimension").SetName("NegativeDimension");
        yield return new TestCaseData(Build(1, 0, "['descr', '<f4']", data), "not a Python dict").SetName("HeaderNotADict");
        yield return new TestCaseData(Build(1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2}", data), "not a valid Python literal").SetName("HeaderSyntaxError");
    }

    [TestCaseSource(nameof(BadFiles))]
    public void RejectsBadFiles(byte[] file, string message)
    {
        var ex = Assert.Throws<InvalidDataException>(() => Npy.Read(new MemoryStream(file)));
        Assert.That(ex!.Message, Does.Contain(message));
    }

    [Test]
    public void RejectsDirectoriesAndMissingFiles()
    {
        using var dir = new TempDirectory();
        using (Assert.EnterMultipleScope())
        {
            Assert.That(() => Npy.Read(dir.Path), Throws.InstanceOf<IOException>().With.Message.Contains("directory"));
            Assert.That(() => Npy.Read(dir.File("missing.npy")), Throws.InstanceOf<IOException>().With.Message.Contains("not found"));
            Assert.That(() => Npy.Write(dir.Path, [1], [1f]), Throws.InstanceOf<IOException>().With.Message.Contains("directory"));
        }
    }

    [Test]
    public void WriteToFileThenRead()
    {
        using var dir = new TempDirectory();
        var path = dir.File("a.npy");
        Npy.Write(path, [2, 2], [1f, 2f, 3f, 4f]);
        var read = Npy.Read(path);
        Assert.That(read.Float32Data, Is.EqualTo(new[] { 1f, 2f, 3f, 4f }));
    }

    /// <summary>A .npy file from its parts, padded as the spec asks (64-byte alignment, '\n' last).</summary>
    internal static byte[] Build(int major, int minor, string dict, byte[] data)
    {
        var preamble = major == 1 ? 10 : 12;
        var total = preamble + dict.Length + 1;
        var padded = (total + 63) / 64 * 64;
        var header = (major == 3 ? Encoding.UTF8 : Encoding.Latin1).GetBytes(dict + new string(' ', padded - total) + "\n");
        var bytes = new List<byte> { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', (byte)major, (byte)minor };
        if (major == 1)
        {
            bytes.AddRange(BitConverter.GetBytes((ushort)header.Length));
        }
        else
        {
            bytes.AddRange(BitConverter.GetBytes((uint)header.Length));
        }

        bytes.AddRange(header);
        bytes.AddRange(data);
        return [.. bytes];
    }
}
