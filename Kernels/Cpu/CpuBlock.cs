namespace Natten.Kernels.Cpu;

/// <summary>
/// A block: up to <see cref="Rows"/> consecutive rows on the last axis of a tile, which share their
/// coordinates (hence their column ranges) on the other two axes. Its columns are runs: for every
/// pair of first-axis coordinates in its window, the columns of the block's union on the last axis,
/// consecutive in the column operands.
/// </summary>
internal static class CpuBlock
{
    /// <summary>Rows per block: the score kernel's register tile is Rows × 3 (or 2) vectors.</summary>
    public const int Rows = 8;

    /// <summary>Range set of the neighborhood runs.</summary>
    public const int NeighborhoodRanges = 0;

    /// <summary>Range set of the additional tokens' run (every row sees all of them).</summary>
    public const int AdditionalRanges = 1;

    /// <summary>Index in <see cref="CpuWorkspace.Ranges"/> of the first column a row sees in a run of range set <paramref name="set"/>.</summary>
    public static int Lo(int set, int row) => (set * 2 * Rows) + row;

    /// <summary>Index in <see cref="CpuWorkspace.Ranges"/> of one past the last column a row sees.</summary>
    public static int Hi(int set, int row) => (((set * 2) + 1) * Rows) + row;
}

/// <summary>
/// Consecutive columns of one source: <see cref="Vectors"/> vectors from column <see cref="Column"/> of
/// its transposed operands (and per-column LSE and Δ), row <see cref="RowColumn"/> on of its row
/// operands, scored into the block's score buffer from <see cref="ScoreColumn"/> on. Each row sees the
/// run's positions <c>[lo, hi)</c> of its <see cref="RangeSet"/>. Columns are token indices where the
/// operand is read in place, tile positions where it was gathered.
/// </summary>
internal struct CpuRun
{
    public int Source;
    public long Column;
    public long RowColumn;
    public int Vectors;
    public int ScoreColumn;
    public int RangeSet;
}

/// <summary>
/// Where a run's columns live: transposed operands (<c>[depth][stride]</c>, one column per key or query)
/// for the score products, row operands (<c>[column][stride]</c>) for the accumulations, and per-column
/// LSE and Δ in the dK/dV pass.
/// </summary>
internal unsafe struct CpuSource
{
    public float* Transposed;
    public nint TransposedStride;
    public float* Transposed2;
    public nint Transposed2Stride;
    public float* Rows;
    public nint RowsStride;
    public float* Rows2;
    public nint Rows2Stride;
    public float* Lse;
    public float* Delta;
}
