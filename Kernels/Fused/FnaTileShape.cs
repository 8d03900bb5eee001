namespace Natten.Kernels.Fused;

/// <summary>
/// The multi-dimensional query tile and KV sub-tile of the fused kernel, per axis (padded to three
/// axes like <see cref="Common.ProblemParams"/>: a 2D 8×8 tile is (1, 8, 8)). A tile's extents are in
/// dilation-group coordinates, so all of its queries share one dilation group. Runtime values: any
/// shape works without recompiling; the profiler can search them.
/// </summary>
internal readonly struct FnaTileShape
{
    public readonly int Q0, Q1, Q2;
    public readonly int K0, K1, K2;

    public FnaTileShape(int q0, int q1, int q2, int k0, int k1, int k2)
    {
        (Q0, Q1, Q2) = (q0, q1, q2);
        (K0, K1, K2) = (k0, k1, k2);
    }

    /// <summary>Queries per tile = threads per group (one thread per query).</summary>
    public int QueryTile => Q0 * Q1 * Q2;

    /// <summary>Keys per KV sub-tile staged in shared memory at once.</summary>
    public int KeyTile => K0 * K1 * K2;

    /// <summary>Floats of dynamic shared memory: Q and O rows (padded by one float against bank conflicts), K and V sub-tiles.</summary>
    public int SharedFloats(int headDim, int valueDim)
        => (QueryTile * (headDim + 1)) + (QueryTile * (valueDim + 1)) + (KeyTile * headDim) + (KeyTile * valueDim);

    /// <summary>
    /// Defaults per rank and head dimension, sized for ≤ 48 KB of shared memory (no opt-in needed):
    /// 64 / 8×8 / 4×4×4 queries for D ≤ 64, half that for larger heads, and KV sub-tiles of 16 / 4×4 / 2×2×4 keys
    /// (8 / 2×4 / 2×2×2 for D &gt; 64). An axis shorter than the tile is clamped (a 1-wide axis gets a 1-wide tile).
    /// </summary>
    public static FnaTileShape Default(int rank, int headDim, int valueDim, int n0, int n1, int n2)
    {
        var large = Math.Max(headDim, valueDim) > 64;
        var (q, k) = rank switch
        {
            1 => (large ? (1, 1, 32) : (1, 1, 64), large ? (1, 1, 8) : (1, 1, 16)),
            2 => (large ? (1, 4, 8) : (1, 8, 8), large ? (1, 2, 4) : (1, 4, 4)),
            _ => (large ? (2, 4, 4) : (4, 4, 4), large ? (2, 2, 2) : (2, 2, 4)),
        };
        return new FnaTileShape(
            Math.Min(q.Item1, n0), Math.Min(q.Item2, n1), Math.Min(q.Item3, n2),
            Math.Min(k.Item1, n0), Math.Min(k.Item2, n1), Math.Min(k.Item3, n2));
    }

    public override string ToString() => $"Q {Q0}x{Q1}x{Q2} / KV {K0}x{K1}x{K2}";
}
