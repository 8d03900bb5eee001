namespace Natten;

/// <summary>Storage type of Q, K, V and the output (computation is at least float32).</summary>
public enum ElementType
{
    /// <summary>IEEE binary32 (<see cref="float"/>).</summary>
    Float32,

    /// <summary>IEEE binary16 (<see cref="Half"/>).</summary>
    Float16,
}
