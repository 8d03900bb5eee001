namespace Natten.Kernels.Cpu;

/// <summary>
/// A box of rows in one dilation group (group coordinates, three axes) and the union of the column
/// ranges its rows see. Rows are queries and columns keys in the forward and the dQ pass; rows are
/// keys and columns the queries that see them in the dK/dV pass.
/// </summary>
internal readonly record struct CpuTile(
    int Group0, int Group1, int Group2,
    int Row0, int Row1, int Row2,
    int Rows0, int Rows1, int Rows2,
    int Column0, int Column1, int Column2,
    int Columns0, int Columns1, int Columns2)
{
    /// <summary>Rows in the box.</summary>
    public int RowCount => Rows0 * Rows1 * Rows2;

    /// <summary>Columns in the union box (0 when some axis sees none).</summary>
    public int ColumnCount => Columns0 * Columns1 * Columns2;
}

/// <summary>How one pass cuts its rows into tiles, and the largest column union a tile needs.</summary>
internal sealed class CpuTilePlan
{
    private CpuTilePlan(CpuTile[] tiles, int maxColumns, int maxRows, int maxLastColumns)
    {
        Tiles = tiles;
        MaxColumns = maxColumns;
        MaxRows = maxRows;
        MaxLastColumns = maxLastColumns;
    }

    public CpuTile[] Tiles { get; }

    public int MaxColumns { get; }

    public int MaxRows { get; }

    /// <summary>The widest union on the last axis (a block's run is at most this long).</summary>
    public int MaxLastColumns { get; }

    /// <summary>
    /// Tiles of at most <paramref name="extent"/> rows per axis over every dilation group; with
    /// <paramref name="inverse"/> the columns are the queries that see each row's key.
    /// </summary>
    public static CpuTilePlan Create(AxisWindows[] axes, int[] extent, bool inverse)
    {
        var tiles = new List<CpuTile>();
        var maxColumns = 0;
        var maxRows = 0;
        var maxLast = 0;
        for (var g0 = 0; g0 < axes[0].Dilation; g0++)
        {
            for (var g1 = 0; g1 < axes[1].Dilation; g1++)
            {
                for (var g2 = 0; g2 < axes[2].Dilation; g2++)
                {
                    var w0 = axes[0].Groups[g0];
                    var w1 = axes[1].Groups[g1];
                    var w2 = axes[2].Groups[g2];
                    for (var r0 = 0; r0 < w0.Length; r0 += extent[0])
                    {
                        var (c0, n0) = Union(w0, r0, Math.Min(extent[0], w0.Length - r0), inverse);
                        for (var r1 = 0; r1 < w1.Length; r1 += extent[1])
                        {
                            var (c1, n1) = Union(w1, r1, Math.Min(extent[1], w1.Length - r1), inverse);
                            for (var r2 = 0; r2 < w2.Length; r2 += extent[2])
                            {
                                var (c2, n2) = Union(w2, r2, Math.Min(extent[2], w2.Length - r2), inverse);
                                var tile = new CpuTile(
                                    g0, g1, g2, r0, r1, r2,
                                    Math.Min(extent[0], w0.Length - r0), Math.Min(extent[1], w1.Length - r1), Math.Min(extent[2], w2.Length - r2),
                                    c0, c1, c2, n0, n1, n2);
                                tiles.Add(tile);
                                maxColumns = Math.Max(maxColumns, tile.ColumnCount);
                                maxRows = Math.Max(maxRows, tile.RowCount);
                                maxLast = Math.Max(maxLast, tile.Columns2);
                            }
                        }
                    }
                }
            }
        }

        return new CpuTilePlan([.. tiles], maxColumns, maxRows, maxLast);
    }

    /// <summary>The column range rows [first, first + count) see together: from the first row's start to the last row's end.</summary>
    private static (int Start, int Count) Union(GroupWindows w, int first, int count, bool inverse)
    {
        var starts = inverse ? w.QueryStart : w.KeyStart;
        var ends = inverse ? w.QueryEnd : w.KeyEnd;
        var start = int.MaxValue;
        var end = int.MinValue;
        for (var i = first; i < first + count; i++)
        {
            if (starts[i] < ends[i])
            {
                start = Math.Min(start, starts[i]);
                end = Math.Max(end, ends[i]);
            }
        }

        return start < end ? (start, end - start) : (0, 0);
    }
}
