namespace Natten;

/// <summary>Storage type of Q, K, V and the output (computation is at least float32).</summary>
public enum ElementType
{
    /// <summary>IEEE binary32 (<see cref="float"/>).</summary>
    Float32,

    /// <summary>IEEE binary16 (<see cref="Half"/>).</summary>
    Float16,

    /// <summary>bfloat16, carried as raw bits in <see cref="ushort"/> (see <see cref="BFloat16Conversions"/>).</summary>
    BFloat16,
}
