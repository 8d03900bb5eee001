namespace Natten;

/// <summary>Where the fused kernel's KV sub-tiles begin on each axis (for <see cref="FusedTuning.Simulate"/>).</summary>
public enum FusedKvTiling
{
    /// <summary>At each query tile's own KV range start (NATTEN's "dynamic KV tiling"; what the <c>fused</c> backend runs).</summary>
    Dynamic,

    /// <summary>On one global grid of sub-tile extents (the first sub-tile is the one holding the range start); modelled only.</summary>
    Static,
}

/// <summary>One query tile of the fused launch and the KV sub-tiles it visits.</summary>
/// <param name="Index">Position in the launch (grid X).</param>
/// <param name="TileIndex">Tile index per spatial axis (dilation group × tiles per group + tile within the group).</param>
/// <param name="Queries">Queries in the tile (edge tiles hold fewer; 0 for tiles of short dilation groups).</param>
/// <param name="Visited">KV sub-tiles visited.</param>
/// <param name="Unmasked">Visited sub-tiles inside every window of the tile (no per-element mask).</param>
/// <param name="PartiallyMasked">Visited sub-tiles that need a mask and hold an allowed pair.</param>
/// <param name="FullyMasked">Visited sub-tiles without any allowed (query, key) pair.</param>
public readonly record struct FusedQueryTile(
    long Index, IReadOnlyList<int> TileIndex, long Queries, long Visited, long Unmasked, long PartiallyMasked, long FullyMasked);

/// <summary>
/// The analytic model of the fused forward kernel for one problem and tile shape (the GNA paper's
/// simulator, run on this library's kernel): KV sub-tiles visited per query tile, how many need
/// masks, useful versus computed FLOPs, and the upper-bound speedup over self-attention.
/// Counts are per (batch, head) unless named FLOPs; FLOPs cover all batches and heads.
/// Additional key/value tokens are not modelled.
/// </summary>
public sealed class FusedSimulation
{
    private readonly Func<IEnumerable<FusedQueryTile>> _tiles;

    internal FusedSimulation(Func<IEnumerable<FusedQueryTile>> tiles) => _tiles = tiles;

    /// <summary>The tile shape simulated (the requested one, or the default the backend would use).</summary>
    public required FusedTiles Tiles { get; init; }

    /// <summary>Dynamic (the kernel's) or static KV tiling.</summary>
    public required FusedKvTiling Tiling { get; init; }

    /// <summary>Query tiles launched per (batch, head), empty tiles of short dilation groups included.</summary>
    public required long QueryTiles { get; init; }

    /// <summary>Query tiles that hold at least one query.</summary>
    public required long NonEmptyQueryTiles { get; init; }

    /// <summary>KV sub-tiles visited, summed over the query tiles.</summary>
    public required double VisitedSubTiles { get; init; }

    /// <summary>Visited sub-tiles that run without per-element masks.</summary>
    public required double UnmaskedSubTiles { get; init; }

    /// <summary>Visited sub-tiles that need masks and hold at least one allowed pair.</summary>
    public required double PartiallyMaskedSubTiles { get; init; }

    /// <summary>Visited sub-tiles with no allowed pair (structurally 0 for this kernel's multi-dimensional tiles).</summary>
    public required double FullyMaskedSubTiles { get; init; }

    /// <summary>The most sub-tiles one query tile visits.</summary>
    public required long MaxVisited { get; init; }

    /// <summary>The fewest sub-tiles a non-empty query tile visits.</summary>
    public required long MinVisited { get; init; }

    /// <summary>Mean sub-tiles per non-empty query tile.</summary>
    public double MeanVisited => VisitedSubTiles / NonEmptyQueryTiles;

    /// <summary>Sub-tiles one query tile visits under self-attention with the same KV sub-tile: Π ⌈n / Tkv⌉.</summary>
    public required long FullAttentionSubTiles { get; init; }

    /// <summary>Useful FLOPs (allowed pairs × 2(D + Dv), all batches and heads); equals <see cref="AttentionFlops.Forward"/> without additional tokens.</summary>
    public required double UsefulFlops { get; init; }

    /// <summary>FLOPs a tiled kernel computes: every visited sub-tile in full (query tile × KV sub-tile pairs), masked pairs and padding included.</summary>
    public required double VisitedFlops { get; init; }

    /// <summary>FLOPs of self-attention (N² pairs) on the same problem.</summary>
    public required double SelfAttentionFlops { get; init; }

    /// <summary>Share of self-attention's pairs the neighborhood leaves out.</summary>
    public double Sparsity => 1 - (UsefulFlops / SelfAttentionFlops);

    /// <summary>The simulator's upper-bound speedup over self-attention: <see cref="FullAttentionSubTiles"/> / <see cref="MaxVisited"/>.</summary>
    public double UpperBoundSpeedup => (double)FullAttentionSubTiles / MaxVisited;

    /// <summary>The FLOP-wise bound 1 / (1 − sparsity).</summary>
    public double FlopBoundSpeedup => SelfAttentionFlops / UsefulFlops;

    /// <summary>Computed FLOPs that are masked out or padding: <see cref="VisitedFlops"/> − <see cref="UsefulFlops"/>.</summary>
    public double WastedFlops => VisitedFlops - UsefulFlops;

    /// <summary>No visited sub-tile needs a mask, so a kernel can reach the FLOP-wise bound.</summary>
    public required bool PerfectlyBlockSparse { get; init; }

    /// <summary>
    /// Whether the published sufficient rule holds (FNA-DESIGN.md, dynamic tiling): on every axis the
    /// KV sub-tile divides K, the query tile divides the stride, and the axis is not causal.
    /// </summary>
    public required bool MeetsBlockSparseRule { get; init; }

    /// <summary>Every query tile of one (batch, head) in launch order, with its sub-tile counts.</summary>
    public IEnumerable<FusedQueryTile> QueryTileVisits() => _tiles();
}
