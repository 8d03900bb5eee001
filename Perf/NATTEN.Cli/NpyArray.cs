namespace Natten.Cli;

/// <summary>
/// A dense C-order array read from (or written to) a .npy file: float32, or float16 kept as
/// <see cref="Half"/> so the library's Half entry points can take it without a conversion.
/// </summary>
internal sealed class NpyArray
{
    private NpyArray(int[] shape, float[]? float32, Half[]? float16)
    {
        Shape = shape;
        Float32Data = float32;
        Float16Data = float16;
    }

    /// <summary>Dimensions, outermost first (empty for a scalar).</summary>
    public int[] Shape { get; }

    /// <summary>The elements when the array is float32, else <c>null</c>.</summary>
    public float[]? Float32Data { get; }

    /// <summary>The elements when the array is float16, else <c>null</c>.</summary>
    public Half[]? Float16Data { get; }

    public bool IsFloat16 => Float16Data is not null;

    /// <summary>Number of elements (the product of <see cref="Shape"/>).</summary>
    public int Length => IsFloat16 ? Float16Data!.Length : Float32Data!.Length;

    /// <summary>NumPy's spelling of the shape: <c>(2, 3)</c>, <c>(5,)</c>, <c>()</c>.</summary>
    public string ShapeText => FormatShape(Shape);

    public static NpyArray FromFloat32(int[] shape, float[] data)
    {
        CheckLength(shape, data.Length);
        return new NpyArray((int[])shape.Clone(), data, null);
    }

    public static NpyArray FromFloat16(int[] shape, Half[] data)
    {
        CheckLength(shape, data.Length);
        return new NpyArray((int[])shape.Clone(), null, data);
    }

    /// <summary>The elements as float16 (the array itself when already float16; float32 values are rounded).</summary>
    public Half[] ToFloat16() => Float16Data ?? [.. Float32Data!.Select(x => (Half)x)];

    /// <summary>The elements as float32 (the array itself when already float32).</summary>
    public float[] ToFloat32()
    {
        if (Float32Data is not null)
        {
            return Float32Data;
        }

        var result = new float[Float16Data!.Length];
        for (var i = 0; i < result.Length; i++)
        {
            result[i] = (float)Float16Data[i];
        }

        return result;
    }

    public static string FormatShape(IReadOnlyList<int> shape)
        => shape.Count == 1 ? $"({shape[0]},)" : $"({string.Join(", ", shape)})";

    /// <summary>The element count of <paramref name="shape"/>.</summary>
    /// <exception cref="InvalidDataException">A dimension is negative or the count exceeds what one .NET array holds.</exception>
    public static int ElementCount(IReadOnlyList<int> shape)
    {
        long count = 1;
        foreach (var dim in shape)
        {
            if (dim < 0)
            {
                throw new InvalidDataException($"shape {FormatShape(shape)} has a negative dimension.");
            }

            count *= dim;
            if (count > Array.MaxLength)
            {
                throw new InvalidDataException($"shape {FormatShape(shape)} has more elements than one array can hold ({Array.MaxLength}).");
            }
        }

        return (int)count;
    }

    private static void CheckLength(int[] shape, int length)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (ElementCount(shape) != length)
        {
            throw new ArgumentException($"shape {FormatShape(shape)} needs {ElementCount(shape)} elements, got {length}.", nameof(shape));
        }
    }
}
