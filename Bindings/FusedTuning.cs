using Natten.Kernels.Fused;
using Natten.Kernels.Runtime;

namespace Natten;

/// <summary>
/// Tile shapes of the <c>fused</c> backend: the default for a problem, whether the default
/// accelerator can run a shape, the shapes worth searching, and the analytic simulator of the
/// kernel (visited KV sub-tiles, masking, upper-bound speedup). Tile shapes are given in
/// <see cref="NeighborhoodAttentionOptions.Tiles"/>.
/// </summary>
public static class FusedTuning
{
    /// <summary>
    /// The tile shape a fused call with these options uses: <see cref="NeighborhoodAttentionOptions.Tiles"/>,
    /// or the default for the rank, head dims and extents (for 16-bit storage, the tensor-core kernel's
    /// default where it runs the problem on the default accelerator).
    /// </summary>
    /// <exception cref="ArgumentException">The shape or options are invalid.</exception>
    public static FusedTiles ResolveTiles(AttentionShape shape, NeighborhoodAttentionOptions options, ElementType elementType = ElementType.Float32)
    {
        var problem = ProblemValidator.Validate(shape, options, elementType);
        return ToTiles(FusedTileRules.TileShape(problem), problem.Rank);
    }

    /// <summary>
    /// Whether the default accelerator can run the fused kernel with the options' tile shape (or the
    /// default one): threads per group and shared memory; when not, <paramref name="reason"/> says why.
    /// </summary>
    /// <exception cref="ArgumentException">The shape or options are invalid (e.g. a tile extent below 1).</exception>
    public static bool CanRun(AttentionShape shape, NeighborhoodAttentionOptions options, ElementType elementType, out string reason)
    {
        var problem = ProblemValidator.Validate(shape, options, elementType);
        var why = FusedTileRules.Check(DeviceRuntime.Default, problem);
        reason = why ?? string.Empty;
        return why is null;
    }

    /// <summary>
    /// The tile shapes the profiler searches for this problem on the default accelerator, least
    /// simulated work first (<see cref="FusedSimulation.VisitedFlops"/>, then fewer sub-tile visits,
    /// then larger query tiles): per axis powers of two up to the first covering the axis's longest
    /// dilation group, query tiles of 32 threads or more, KV sub-tiles of 8 to 128 keys (capped by
    /// what the problem holds), and only shapes the device accepts.
    /// </summary>
    /// <exception cref="ArgumentException">The shape or options are invalid.</exception>
    public static IReadOnlyList<FusedTiles> Candidates(AttentionShape shape, NeighborhoodAttentionOptions options, ElementType elementType)
    {
        var problem = ProblemValidator.Validate(shape, options with { Tiles = null }, elementType);
        var p = NaiveBackend.ToParams(problem);
        return FusedTileRules.SearchSpace(DeviceRuntime.Default, problem)
            .Select(t => (Tiles: t, Model: new FnaSimulator(p, FusedTileRules.Pad(t.Query, t.Key), KvTilingMode.Dynamic)))
            .OrderBy(c => c.Model.VisitedPairs)
            .ThenBy(c => c.Model.VisitedSubTiles)
            .ThenByDescending(c => c.Model.Tile.QueryTile)
            .ThenByDescending(c => c.Model.Tile.KeyTile)
            .Select(c => new FusedTiles(AxisValues.PerAxis(c.Tiles.Query), AxisValues.PerAxis(c.Tiles.Key)))
            .ToArray();
    }

    /// <summary>
    /// Runs the analytic model of the fused forward kernel for the options' tile shape (or the
    /// default one, see <see cref="ResolveTiles"/>). <see cref="FusedKvTiling.Dynamic"/> counts exactly the
    /// sub-tiles the kernels visit (the float32-math and the tensor-core kernel tile alike);
    /// <see cref="FusedKvTiling.Static"/> models a global sub-tile grid. No kernel runs; only a
    /// 16-bit <paramref name="elementType"/> without explicit tiles asks the default accelerator
    /// which default applies.
    /// </summary>
    /// <exception cref="ArgumentException">The shape or options are invalid.</exception>
    public static FusedSimulation Simulate(
        AttentionShape shape, NeighborhoodAttentionOptions options, FusedKvTiling tiling = FusedKvTiling.Dynamic, ElementType elementType = ElementType.Float32)
    {
        var problem = ProblemValidator.Validate(shape, options, elementType);
        var p = NaiveBackend.ToParams(problem);
        var tile = FusedTileRules.TileShape(problem);
        var model = new FnaSimulator(p, tile, tiling == FusedKvTiling.Static ? KvTilingMode.Static : KvTilingMode.Dynamic);
        var flopsPerPair = 2.0 * problem.Batch * problem.Heads * (problem.HeadDim + problem.ValueDim);
        var rank = problem.Rank;
        var rule = true;
        for (var a = 0; a < rank; a++)
        {
            var (q, k) = FusedTileRules.Unpad(tile, rank);
            rule &= !problem.Causal[a] && problem.KernelSize[a] % k[a] == 0 && problem.Stride[a] % q[a] == 0;
        }

        IEnumerable<FusedQueryTile> Tiles()
        {
            foreach (var t in model.Tiles())
            {
                int[] index = [t.T0, t.T1, t.T2];
                yield return new FusedQueryTile(t.Index, index[(3 - rank)..], t.Queries, t.Visited, t.Unmasked, t.PartiallyMasked, t.FullyMasked);
            }
        }

        return new FusedSimulation(Tiles)
        {
            Tiles = ToTiles(tile, rank),
            Tiling = tiling,
            QueryTiles = model.QueryTiles,
            NonEmptyQueryTiles = model.NonEmptyQueryTiles,
            VisitedSubTiles = model.VisitedSubTiles,
            UnmaskedSubTiles = model.UnmaskedSubTiles,
            PartiallyMaskedSubTiles = model.PartiallyMaskedSubTiles,
            FullyMaskedSubTiles = model.FullyMaskedSubTiles,
            MaxVisited = model.MaxVisited,
            MinVisited = model.MinVisited,
            FullAttentionSubTiles = model.FullAttentionSubTiles,
            UsefulFlops = model.AllowedPairs * flopsPerPair,
            VisitedFlops = model.VisitedPairs * flopsPerPair,
            SelfAttentionFlops = model.SelfAttentionPairs * flopsPerPair,
            PerfectlyBlockSparse = model.PerfectlyBlockSparse,
            MeetsBlockSparseRule = rule,
        };
    }

    private static FusedTiles ToTiles(FnaTileShape tile, int rank)
    {
        var (q, k) = FusedTileRules.Unpad(tile, rank);
        return new FusedTiles(AxisValues.PerAxis(q), AxisValues.PerAxis(k));
    }
}
