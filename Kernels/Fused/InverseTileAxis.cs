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

    public static InverseTileAxis Create(int tileIndex, int n, int k, int s, int d, int c, int keyTile)
    {
        var perGroup = FnaForwardKernel.TilesPerGroup(n, d, keyTile);
        var group = tileIndex / perGroup;
        var groupLength = (n - group + d - 1) / d;
        var first = tileIndex % perGroup * keyTile;
        var count = groupLength - first < keyTile ? groupLength - first : keyTile;
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
