using Natten.Kernels.Common;

namespace Natten.Kernels.Fused;

/// <summary>Where the KV sub-tiles of a query tile begin on each axis.</summary>
internal enum KvTilingMode
{
    /// <summary>At the tile's own range start, stepping by the sub-tile extent (what <see cref="FnaForwardKernel"/> does).</summary>
    Dynamic,

    /// <summary>On a global grid of sub-tile extents: the first sub-tile is the one holding the range start.</summary>
    Static,
}

/// <summary>One query tile of the launch and what it visits.</summary>
/// <param name="Index">Grid X index of the tile's group (the kernel's <c>Grid.IdxX</c>).</param>
/// <param name="T0">Tile index along axis 0 (dilation group × tile within the group).</param>
/// <param name="T1">Tile index along axis 1.</param>
/// <param name="T2">Tile index along axis 2.</param>
/// <param name="Queries">Queries the tile holds (partial edge tiles hold fewer than the tile shape).</param>
/// <param name="Visited">KV sub-tiles visited.</param>
/// <param name="Unmasked">Visited sub-tiles inside every window of the tile (the kernel's no-mask path).</param>
/// <param name="FullyMasked">Visited sub-tiles in which no query of the tile may attend to any key.</param>
/// <param name="AllowedPairs">(query, key) pairs of this tile that attend (the useful work).</param>
internal readonly record struct QueryTileVisit(
    long Index, int T0, int T1, int T2, long Queries, long Visited, long Unmasked, long FullyMasked, double AllowedPairs)
{
    /// <summary>Sub-tiles that need per-element masks but hold at least one allowed pair.</summary>
    public long PartiallyMasked => Visited - Unmasked - FullyMasked;

    /// <summary>A tile of a short dilation group with no queries: the kernel returns at once.</summary>
    public bool IsEmpty => Queries == 0;
}

/// <summary>
/// An analytic, host-side model of <see cref="FnaForwardKernel"/> and <see cref="FnaTensorCoreKernel"/>,
/// which tile alike (the GNA paper's simulator): for a problem and tile shape, which KV sub-tiles
/// every query tile of the launch visits and how many of them need masks. It builds each tile's axes
/// with the kernels' own <see cref="TileAxis.Create"/> over their launch grid
/// (<see cref="FnaForwardKernel.TilesPerGroup"/>, decoded as <see cref="TileAxis.ForGridIndex"/> does),
/// so under <see cref="KvTilingMode.Dynamic"/> it counts exactly the sub-tiles the kernels' loops walk.
/// </summary>
/// <remarks>
/// <para>A tile's queries are a product of per-axis ranges, its sub-tiles are a product of per-axis
/// ranges, and the neighborhood rule is a product over axes, so every count factorises: per query
/// tile, visited = Π n_a, unmasked = Π u_a (inside the tile's core on every axis), sub-tiles with
/// an allowed pair = Π z_a, allowed pairs = Π p_a. The simulator computes the per-axis numbers
/// once per tile index along each axis and multiplies.</para>
/// <para>Fully masked sub-tiles cannot occur here: a tile's range on an axis is the union of its
/// queries' windows, which is contiguous, so every sub-tile that starts inside it holds a key some
/// query sees on that axis. The count is kept so the model states it instead of assuming it.</para>
/// <para>Additional (global) key/value tokens are not modelled: they cost the same with or without
/// a neighborhood.</para>
/// </remarks>
internal sealed class FnaSimulator
{
    private readonly AxisSummary[][] _axes;

    public FnaSimulator(ProblemParams p, FnaTileShape tile, KvTilingMode mode)
    {
        Problem = p;
        Tile = tile;
        Mode = mode;
        _axes =
        [
            SummariseAxis(p.N0, p.K0, p.S0, p.D0, p.C0, tile.Q0, tile.K0, mode),
            SummariseAxis(p.N1, p.K1, p.S1, p.D1, p.C1, tile.Q1, tile.K1, mode),
            SummariseAxis(p.N2, p.K2, p.S2, p.D2, p.C2, tile.Q2, tile.K2, mode),
        ];

        QueryTiles = (long)_axes[0].Length * _axes[1].Length * _axes[2].Length;
        VisitedSubTiles = Product(a => a.Sum(x => (double)x.SubTiles));
        UnmaskedSubTiles = Product(a => a.Sum(x => (double)x.Inside));
        var withPairs = Product(a => a.Sum(x => (double)x.WithPairs));
        FullyMaskedSubTiles = VisitedSubTiles - withPairs;
        AllowedPairs = Product(a => a.Sum(x => (double)x.Pairs));
        NonEmptyQueryTiles = (long)Product(a => a.Count(x => x.Queries > 0));
        MaxVisited = (long)Product(a => a.Where(x => x.Queries > 0).Max(x => (double)x.SubTiles));
        MinVisited = (long)Product(a => a.Where(x => x.Queries > 0).Min(x => (double)x.SubTiles));
        FullAttentionSubTiles = (long)Ceil(p.N0, tile.K0) * Ceil(p.N1, tile.K1) * Ceil(p.N2, tile.K2);
        VisitedPairs = VisitedSubTiles * tile.QueryTile * tile.KeyTile;
        SelfAttentionPairs = (double)p.Tokens * p.Tokens;
    }

    public ProblemParams Problem { get; }

    public FnaTileShape Tile { get; }

    public KvTilingMode Mode { get; }

    /// <summary>Query tiles the kernel launches (grid X), empty ones of short dilation groups included.</summary>
    public long QueryTiles { get; }

    /// <summary>Query tiles that hold at least one query.</summary>
    public long NonEmptyQueryTiles { get; }

    /// <summary>KV sub-tiles visited, summed over the query tiles of one (batch, head).</summary>
    public double VisitedSubTiles { get; }

    /// <summary>Visited sub-tiles inside every window of their query tile: no per-element mask.</summary>
    public double UnmaskedSubTiles { get; }

    /// <summary>Visited sub-tiles with no allowed (query, key) pair.</summary>
    public double FullyMaskedSubTiles { get; }

    /// <summary>Visited sub-tiles that need masks and hold at least one allowed pair.</summary>
    public double PartiallyMaskedSubTiles => VisitedSubTiles - UnmaskedSubTiles - FullyMaskedSubTiles;

    /// <summary>The most sub-tiles any query tile visits.</summary>
    public long MaxVisited { get; }

    /// <summary>The fewest sub-tiles any non-empty query tile visits.</summary>
    public long MinVisited { get; }

    /// <summary>Sub-tiles one query tile visits under full self-attention with the same KV sub-tile: Π ⌈n/Tkv⌉.</summary>
    public long FullAttentionSubTiles { get; }

    /// <summary>(query, key) pairs that attend, per (batch, head); equals the useful-FLOP pair count.</summary>
    public double AllowedPairs { get; }

    /// <summary>(query, key) pairs a tiled kernel computes: visited sub-tiles × query tile × KV sub-tile (padding included).</summary>
    public double VisitedPairs { get; }

    /// <summary>N² pairs of self-attention over the same tokens.</summary>
    public double SelfAttentionPairs { get; }

    /// <summary>The GNA simulator's bound: full-attention sub-tiles over the most any query tile visits.</summary>
    public double UpperBoundSpeedup => (double)FullAttentionSubTiles / MaxVisited;

    /// <summary>Share of self-attention's pairs the neighborhood leaves out.</summary>
    public double Sparsity => 1 - (AllowedPairs / SelfAttentionPairs);

    /// <summary>1 / (1 − sparsity): the speedup if only useful pairs cost anything.</summary>
    public double FlopBoundSpeedup => SelfAttentionPairs / AllowedPairs;

    /// <summary>No visited sub-tile needs a mask: tiles and windows line up exactly.</summary>
    public bool PerfectlyBlockSparse => UnmaskedSubTiles == VisitedSubTiles;

    /// <summary>The sub-tile counts of one query tile along one axis (for tests and per-tile reports).</summary>
    public AxisSummary Axis(int axis, int tileIndex) => _axes[axis][tileIndex];

    /// <summary>Tiles along <paramref name="axis"/> (dilation groups × tiles per group).</summary>
    public int TilesAlong(int axis) => _axes[axis].Length;

    /// <summary>Every query tile in the kernel's launch order (grid X), with what it visits.</summary>
    public IEnumerable<QueryTileVisit> Tiles()
    {
        var tiles1 = _axes[1].Length;
        var tiles2 = _axes[2].Length;
        for (long x = 0; x < QueryTiles; x++)
        {
            // The kernel's decomposition of Grid.IdxX.
            var t2 = (int)(x % tiles2);
            var t1 = (int)(x / tiles2 % tiles1);
            var t0 = (int)(x / tiles2 / tiles1);
            var a0 = _axes[0][t0];
            var a1 = _axes[1][t1];
            var a2 = _axes[2][t2];
            var queries = (long)a0.Queries * a1.Queries * a2.Queries;
            if (queries == 0)
            {
                yield return new QueryTileVisit(x, t0, t1, t2, 0, 0, 0, 0, 0);
                continue;
            }

            var visited = (long)a0.SubTiles * a1.SubTiles * a2.SubTiles;
            var withPairs = (long)a0.WithPairs * a1.WithPairs * a2.WithPairs;
            yield return new QueryTileVisit(
                x, t0, t1, t2, queries, visited, (long)a0.Inside * a1.Inside * a2.Inside, visited - withPairs,
                (double)a0.Pairs * a1.Pairs * a2.Pairs);
        }
    }

    /// <summary>Where the sub-tiles of one axis of a query tile begin (the loop the kernel runs, or the static grid).</summary>
    public static IEnumerable<int> SubTileStarts(TileAxis axis, int extent, KvTilingMode mode)
    {
        if (axis.IsEmpty)
        {
            yield break;
        }

        var first = mode == KvTilingMode.Dynamic ? axis.RangeStart : axis.RangeStart / extent * extent;
        for (var a = first; a < axis.RangeEnd; a += extent)
        {
            yield return a;
        }
    }

    private double Product(Func<AxisSummary[], double> perAxis) => perAxis(_axes[0]) * perAxis(_axes[1]) * perAxis(_axes[2]);

    private static int Ceil(int n, int d) => (n + d - 1) / d;

    private static AxisSummary[] SummariseAxis(int n, int k, int s, int d, int c, int queryTile, int keyTile, KvTilingMode mode)
    {
        var tiles = d * FnaForwardKernel.TilesPerGroup(n, d, queryTile);
        var result = new AxisSummary[tiles];
        for (var t = 0; t < tiles; t++)
        {
            var axis = TileAxis.Create(t, n, k, s, d, c, queryTile);
            if (axis.IsEmpty)
            {
                result[t] = new AxisSummary(0, 0, 0, 0, 0, 0, 0);
                continue;
            }

            int subTiles = 0, inside = 0, withPairs = 0;
            long pairs = 0;
            foreach (var a in SubTileStarts(axis, keyTile, mode))
            {
                subTiles++;
                if (axis.InsideEveryWindow(a, keyTile))
                {
                    inside++;
                }

                long here = 0;
                for (var q = 0; q < axis.Count; q++)
                {
                    var lo = Math.Max(a, axis.WindowStart(q));
                    var hi = Math.Min(a + keyTile, axis.WindowEnd(q));
                    here += Math.Max(0, hi - lo);
                }

                pairs += here;
                withPairs += here > 0 ? 1 : 0;
            }

            result[t] = new AxisSummary(axis.Count, subTiles, inside, withPairs, pairs, axis.RangeStart, axis.RangeEnd);
        }

        return result;
    }

    /// <summary>One axis of one query tile: its queries, sub-tiles, how many lie in its core, how many hold an allowed pair, and the allowed pairs.</summary>
    internal readonly record struct AxisSummary(int Queries, int SubTiles, int Inside, int WithPairs, long Pairs, int RangeStart, int RangeEnd);
}
