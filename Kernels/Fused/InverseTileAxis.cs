using Natten.Kernels.Common;

namespace Natten.Kernels.Fused;

/// <summary>
/// One axis of a key tile for the backward's dK/dV kernel, in dilation-group coordinates: the keys
/// it holds, the union of the queries that see any of them [<see cref="RangeStart"/>,
/// <see cref="RangeEnd"/>), and the core of queries that see all of them. Valid because the first
/// and last query seeing a key never decrease along the axis (window starts and ends never do).
/// </summary>
internal readonly struct InverseTileAxis
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

    private InverseTileAxis(int n, int k, int s, int d, int c, int group, int groupLength, int first, int count)
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
        if (count <= 0)
        {
            RangeStart = RangeEnd = CoreStart = CoreEnd = 0;
            return;
        }

        QueriesOf(first, out var firstStart, out var firstEnd);
        QueriesOf(first + count - 1, out var lastStart, out var lastEnd);
        RangeStart = firstStart;
        RangeEnd = lastEnd;
        CoreStart = lastStart;
        CoreEnd = firstEnd;
    }

    public bool IsEmpty => Count <= 0;

    /// <summary>The three axes of the key tile that grid index <paramref name="x"/> names (key tiles have the query tile's extents).</summary>
    public static void ForGridIndex(ProblemParams p, FnaTileShape tile, int x, out InverseTileAxis axis0, out InverseTileAxis axis1, out InverseTileAxis axis2)
    {
        var tiles1 = p.D1 * FnaForwardKernel.TilesPerGroup(p.N1, p.D1, tile.Q1);
        var tiles2 = p.D2 * FnaForwardKernel.TilesPerGroup(p.N2, p.D2, tile.Q2);
        axis0 = Create(x / tiles2 / tiles1, p.N0, p.K0, p.S0, p.D0, p.C0, tile.Q0);
        axis1 = Create(x / tiles2 % tiles1, p.N1, p.K1, p.S1, p.D1, p.C1, tile.Q1);
        axis2 = Create(x % tiles2, p.N2, p.K2, p.S2, p.D2, p.C2, tile.Q2);
    }

    /// <summary>The (b, token, kv head) row of tile-local key <paramref name="local"/>, or −1 when the tile has no such key.</summary>
    public static long KeyRow(
        ProblemParams p, FnaTileShape tile, InverseTileAxis axis0, InverseTileAxis axis1, InverseTileAxis axis2, int local, int batch, int kvHead)
    {
        var k2 = local % tile.Q2;
        var k1 = local / tile.Q2 % tile.Q1;
        var k0 = local / tile.Q2 / tile.Q1;
        if (!(axis0.HasKey(k0) && axis1.HasKey(k1) && axis2.HasKey(k2)))
        {
            return -1;
        }

        return (((batch * p.Tokens) + p.Token(axis0.Coordinate(k0), axis1.Coordinate(k1), axis2.Coordinate(k2))) * p.KvHeads) + kvHead;
    }

    /// <summary>The (b, token, head) row of slot <paramref name="slot"/> of a query sub-tile, or −1 past the end of the dilation group.</summary>
    public static long QueryRow(
        ProblemParams p, FnaTileShape tile, InverseTileAxis axis0, InverseTileAxis axis1, InverseTileAxis axis2,
        int a0, int a1, int a2, int slot, int batch, int head)
    {
        var i2 = a2 + (slot % tile.K2);
        var i1 = a1 + (slot / tile.K2 % tile.K1);
        var i0 = a0 + (slot / tile.K2 / tile.K1);
        if (i0 >= axis0.GroupLength || i1 >= axis1.GroupLength || i2 >= axis2.GroupLength)
        {
            return -1;
        }

        return ((((long)batch * p.Tokens) + p.Token(axis0.Original(i0), axis1.Original(i1), axis2.Original(i2))) * p.Heads) + head;
    }

    public static InverseTileAxis Create(int tileIndex, int n, int k, int s, int d, int c, int keyTile)
    {
        TileAxis.Slice(tileIndex, n, d, keyTile, out var group, out var groupLength, out var first, out var count);
        return new InverseTileAxis(n, k, s, d, c, group, groupLength, first, count);
    }

    public bool HasKey(int local) => local < Count;

    public int Coordinate(int local) => Original(First + (local < Count ? local : Count - 1));

    public int Original(int inGroup) => (inGroup * Dilation) + Group;

    /// <summary>Whether the query sub-tile [a, a + extent) lies inside the queries of every key of the tile.</summary>
    public bool InsideEveryRange(int a, int extent) => a >= CoreStart && a + extent <= CoreEnd;

    /// <summary>Whether the query at group coordinate <paramref name="query"/> sees the key at group coordinate <paramref name="key"/>.</summary>
    public bool Sees(int query, int key)
    {
        WindowRule.KeyRange(Original(query), Length, Kernel, Stride, Dilation, Causal != 0, out var firstKey, out var count);
        var start = (firstKey - Group) / Dilation;
        return key >= start && key < start + count;
    }

    private void QueriesOf(int key, out int start, out int end)
    {
        WindowRule.QueryRange(Original(key), Length, Kernel, Stride, Dilation, Causal != 0, out var firstQuery, out var count);
        start = (firstQuery - Group) / Dilation;
        end = start + count;
    }
}
