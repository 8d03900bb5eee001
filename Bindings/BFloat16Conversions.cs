namespace Natten;

/// <summary>
/// bfloat16 carried as raw bits (<see cref="ushort"/>, the upper 16 bits of a float32): .NET and ILGPU
/// have no bfloat16 type, so the bf16 entry points take and return bit patterns, and these helpers
/// convert. Float to bf16 rounds to nearest, ties to even; NaN stays NaN.
/// </summary>
public static class BFloat16Conversions
{
    /// <summary>The bf16 bits nearest to <paramref name="value"/>.</summary>
    public static ushort FromSingle(float value)
    {
        var bits = (uint)BitConverter.SingleToInt32Bits(value);
        if (float.IsNaN(value))
        {
            return (ushort)((bits >> 16) | 0x0040u);
        }

        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }

    /// <summary>The float32 value of bf16 bits (exact).</summary>
    public static float ToSingle(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>Rounds every value of <paramref name="source"/> to bf16.</summary>
    /// <exception cref="ArgumentException">The destination is shorter than the source.</exception>
    public static void FromSingle(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        if (destination.Length < source.Length)
        {
            throw new ArgumentException($"destination has {destination.Length} elements; {source.Length} needed.", nameof(destination));
        }

        for (var i = 0; i < source.Length; i++)
        {
            destination[i] = FromSingle(source[i]);
        }
    }

    /// <summary>Widens every bf16 value of <paramref name="source"/> to float32 (exact).</summary>
    /// <exception cref="ArgumentException">The destination is shorter than the source.</exception>
    public static void ToSingle(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        if (destination.Length < source.Length)
        {
            throw new ArgumentException($"destination has {destination.Length} elements; {source.Length} needed.", nameof(destination));
        }

        for (var i = 0; i < source.Length; i++)
        {
            destination[i] = ToSingle(source[i]);
        }
    }
}
