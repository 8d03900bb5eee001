using Natten.Kernels.Common;

namespace Natten.Kernels.Fused;

/// <summary>
/// One axis of a query tile, in the coordinates of its dilation group: which queries the tile has,
/// their windows, the union KV range [<see cref="RangeStart"/>, <see cref="RangeEnd"/>) the tile must
/// visit, and the core [<see cref="CoreStart"/>, <see cref="CoreEnd"/>) that every query of the tile
/// sees. Both follow from window starts and ends never decreasing along the axis (FNA-DESIGN.md).
/// </summary>
internal readonly struct TileAxis
{
    public readonly int Length;
    public readonly int Kernel;
    public readonly int Stride;
    public readonly int Dilation;
    public readonly int Causal;
    public readonly int Group;
    public readonly int GroupLength;
    public readonly int First;
    public readonly int Count;
    public readonly int RangeStart;
    public readonly int RangeEnd;
    public readonly int CoreStart;
    public readonly int CoreEnd;

    private TileAxis(int n, int k, int s, int d, int c, int group, int groupLength, int first, int count)
    {
        Length = n;
        Kernel = k;
        Stride = s;
        Dilation = d;
        Causal = c;
        Group = group;
        GroupLength = groupLength;
        First = first;
        Count = count;
        var last = first + count - 1;
        RangeStart = count > 0 ? StartOf(first) : 0;
        RangeEnd = count > 0 ? EndOf(last) : 0;
        CoreStart = count > 0 ? StartOf(last) : 0;
        CoreEnd = count > 0 ? EndOf(first) : 0;
    }

    public bool IsEmpty => Count <= 0;

    /// <summary>The three axes of the query tile that grid index <paramref name="x"/> names (row-major over the axes).</summary>
    public static void ForGridIndex(ProblemParams p, FnaTileShape tile, int x, out TileAxis axis0, out TileAxis axis1, out TileAxis axis2)
    {
        var tiles1 = p.D1 * FnaForwardKernel.TilesPerGroup(p.N1, p.D1, tile.Q1);
        var tiles2 = p.D2 * FnaForwardKernel.TilesPerGroup(p.N2, p.D2, tile.Q2);
        axis0 = Create(x / tiles2 / tiles1, p.N0, p.K0, p.S0, p.D0, p.C0, tile.Q0);
        axis1 = Create(x / tiles2 % tiles1, p.N1, p.K1, p.S1, p.D1, p.C1, tile.Q1);
        axis2 = Create(x % tiles2, p.N2, p.K2, p.S2, p.D2, p.C2, tile.Q2);
    }

    /// <summary>The (b, token, head) row of tile-local query <paramref name="local"/>, or −1 when the tile has no such query.</summary>
    public static long QueryRow(ProblemParams p, FnaTileShape tile, TileAxis axis0, TileAxis axis1, TileAxis axis2, int local, int batch, int head)
    {
        var q2 = local % tile.Q2;
        var q1 = local / tile.Q2 % tile.Q1;
        var q0 = local / tile.Q2 / tile.Q1;
        if (!(axis0.HasQuery(q0) && axis1.HasQuery(q1) && axis2.HasQuery(q2)))
        {
            return -1;
        }

        return (((batch * p.Tokens) + p.Token(axis0.Coordinate(q0), axis1.Coordinate(q1), axis2.Coordinate(q2))) * p.Heads) + head;
    }

    /// <summary>
    /// The (b, token, kv head) row of slot <paramref name="slot"/> of the KV sub-tile at group coordinates
    /// (<paramref name="a0"/>, <paramref name="a1"/>, <paramref name="a2"/>), or −1 past the end of the dilation group.
    /// </summary>
    public static long KeyRow(
        ProblemParams p, FnaTileShape tile, TileAxis axis0, TileAxis axis1, TileAxis axis2, int a0, int a1, int a2, int slot, int batch, int kvHead)
    {
        var j2 = a2 + (slot % tile.K2);
        var j1 = a1 + (slot / tile.K2 % tile.K1);
        var j0 = a0 + (slot / tile.K2 / tile.K1);
        if (j0 >= axis0.GroupLength || j1 >= axis1.GroupLength || j2 >= axis2.GroupLength)
        {
            return -1;
        }

        return ((((long)batch * p.Tokens) + p.Token(axis0.Original(j0), axis1.Original(j1), axis2.Original(j2))) * p.KvHeads) + kvHead;
    }

    /// <summary>Axis <c>tileIndex</c> enumerates (dilation group, tile within the group).</summary>
    public static TileAxis Create(int tileIndex, int n, int k, int s, int d, int c, int queryTile)
    {
        Slice(tileIndex, n, d, queryTile, out var group, out var groupLength, out var first, out var count);
        return new TileAxis(n, k, s, d, c, group, groupLength, first, count);
    }

    /// <summary>
    /// Which dilation group and which run of it tile <paramref name="tileIndex"/> covers on an axis: tiles of
    /// <paramref name="extent"/> positions, enough per group for the longest group (short groups' last tiles are partial or empty).
    /// </summary>
    public static void Slice(int tileIndex, int n, int d, int extent, out int group, out int groupLength, out int first, out int count)
    {
        var perGroup = FnaForwardKernel.TilesPerGroup(n, d, extent);
        group = tileIndex / perGroup;
        groupLength = (n - group + d - 1) / d;
        first = tileIndex % perGroup * extent;
        count = groupLength - first < extent ? groupLength - first : extent;
    }

    /// <summary>Whether the tile has a query at local index <paramref name="local"/>.</summary>
    public bool HasQuery(int local) => local < Count;

    /// <summary>Original coordinate of local query <paramref name="local"/> (clamped into the tile for absent queries).</summary>
    public int Coordinate(int local) => Original(First + (local < Count ? local : Count - 1));

    public int Original(int inGroup) => (inGroup * Dilation) + Group;

    public int WindowStart(int local) => StartOf(First + (local < Count ? local : Count - 1));

    public int WindowEnd(int local) => EndOf(First + (local < Count ? local : Count - 1));

    /// <summary>Whether the sub-tile [a, a + extent) lies inside every window of the tile on this axis.</summary>
    public bool InsideEveryWindow(int a, int extent) => a >= CoreStart && a + extent <= CoreEnd;

    private int StartOf(int inGroup)
    {
        WindowRule.KeyRange(Original(inGroup), Length, Kernel, Stride, Dilation, Causal != 0, out var firstKey, out _);
        return (firstKey - Group) / Dilation;
    }

    private int EndOf(int inGroup)
    {
        WindowRule.KeyRange(Original(inGroup), Length, Kernel, Stride, Dilation, Causal != 0, out var firstKey, out var count);
        return ((firstKey - Group) / Dilation) + count;
    }
}
