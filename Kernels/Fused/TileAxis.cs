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

    /// <summary>Axis <c>tileIndex</c> enumerates (dilation group, tile within the group).</summary>
    public static TileAxis Create(int tileIndex, int n, int k, int s, int d, int c, int queryTile)
    {
        var perGroup = FnaForwardKernel.TilesPerGroup(n, d, queryTile);
        var group = tileIndex / perGroup;
        var groupLength = (n - group + d - 1) / d;
        var first = tileIndex % perGroup * queryTile;
        var count = groupLength - first < queryTile ? groupLength - first : queryTile;
        return new TileAxis(n, k, s, d, c, group, groupLength, first, count);
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
