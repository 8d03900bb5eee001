using Natten.Kernels.Common;
using Natten.Kernels.Fused;
using Natten.Tests.Support;

namespace Natten.Tests.Simulator;

/// <summary>
/// The fused kernel's analytic model (<see cref="FnaSimulator"/>, <see cref="FusedTuning.Simulate"/>):
/// the GNA paper's worked example, small cases counted by hand, and agreement with the sub-tiles the
/// kernel's own loops visit.
/// </summary>
public sealed class FnaSimulatorTests
{
    private static readonly AttentionShape _video = new(1, (30, 48, 80), 1, 128);

    /// <summary>
    /// FNA-DESIGN.md's check (GNA paper: 3.3× / 11.1×): Q tile 4×8×8, KV tile 2×8×8 on 30×48×80 with
    /// window 18×24×24. The paper's numbers are those of static (global-grid) KV tiling; the kernel's
    /// dynamic tiling visits at most 11×4×4 = 176 sub-tiles at stride 1 instead of 11×5×5 = 275, so
    /// its bound is 900/176 = 5.11×. At stride 16×8×8 both tilings give 900/81 = 11.11×.
    /// </summary>
    [TestCase(FusedKvTiling.Static, 1, 1, 1, 275, 900.0 / 275, 3.27)]
    [TestCase(FusedKvTiling.Static, 16, 8, 8, 81, 900.0 / 81, 11.11)]
    [TestCase(FusedKvTiling.Dynamic, 1, 1, 1, 176, 900.0 / 176, 5.11)]
    [TestCase(FusedKvTiling.Dynamic, 16, 8, 8, 81, 900.0 / 81, 11.11)]
    public void GnaWorkedExample(FusedKvTiling tiling, int s0, int s1, int s2, long maxVisited, double bound, double rounded)
    {
        var options = new NeighborhoodAttentionOptions((18, 24, 24))
        {
            Stride = (s0, s1, s2),
            Tiles = new FusedTiles((4, 8, 8), (2, 8, 8)),
        };
        var sim = FusedTuning.Simulate(_video, options, tiling);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(sim.FullAttentionSubTiles, Is.EqualTo(15 * 6 * 10));
            Assert.That(sim.MaxVisited, Is.EqualTo(maxVisited));
            Assert.That(sim.UpperBoundSpeedup, Is.EqualTo(bound).Within(1e-12));
            Assert.That(Math.Round(sim.UpperBoundSpeedup, 2), Is.EqualTo(rounded));
            Assert.That(sim.PerfectlyBlockSparse, Is.EqualTo(s0 == 16), "stride 16×8×8 is perfectly block-sparse under both tilings");
            Assert.That(sim.MeetsBlockSparseRule, Is.EqualTo(s0 == 16));
            Assert.That(sim.UsefulFlops, Is.EqualTo(AttentionFlops.Forward(_video, options)).Within(1e-9).Percent);
        }
    }

    [Test]
    public void FlopBoundOfTheVideoProblem()
    {
        // 1 / (1 − sparsity) = N / ΠK when no window is cut: (30·48·80) / (18·24·24) = 11.11.
        var sim = FusedTuning.Simulate(_video, new NeighborhoodAttentionOptions((18, 24, 24)) { Tiles = new FusedTiles((4, 8, 8), (2, 8, 8)) });
        Assert.That(sim.FlopBoundSpeedup, Is.EqualTo(30.0 * 48 * 80 / (18 * 24 * 24)).Within(1e-9));
    }

    /// <summary>
    /// 1D, n = 8, K = 3, query tile 4, KV sub-tile 2. Windows start at clamp(i − 1, 0, 5): tile 0
    /// (queries 0–3) has range [0, 5), core [2, 3); tile 1 (queries 4–7) range [3, 8), core [5, 6).
    /// Dynamic: sub-tiles at 0, 2, 4 and 3, 5, 7; none inside a core. Static: 0, 2, 4 and 2, 4, 6.
    /// Full attention: ⌈8/2⌉ = 4 sub-tiles, so the bound is 4/3.
    /// </summary>
    [TestCase(FusedKvTiling.Dynamic)]
    [TestCase(FusedKvTiling.Static)]
    public void OneDimensionalByHand(FusedKvTiling tiling)
    {
        var shape = new AttentionShape(1, 8, 1, 4);
        var sim = FusedTuning.Simulate(shape, new NeighborhoodAttentionOptions(3) { Tiles = new FusedTiles(4, 2) }, tiling);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(sim.QueryTiles, Is.EqualTo(2));
            Assert.That(sim.VisitedSubTiles, Is.EqualTo(6));
            Assert.That(sim.UnmaskedSubTiles, Is.Zero);
            Assert.That(sim.PartiallyMaskedSubTiles, Is.EqualTo(6));
            Assert.That(sim.FullyMaskedSubTiles, Is.Zero);
            Assert.That(sim.MaxVisited, Is.EqualTo(3));
            Assert.That(sim.FullAttentionSubTiles, Is.EqualTo(4));
            Assert.That(sim.UpperBoundSpeedup, Is.EqualTo(4.0 / 3).Within(1e-12));

            // 8 queries × 3 keys useful; 6 sub-tiles × 4 queries × 2 keys computed; × 2(D + Dv) = 16 FLOPs a pair.
            Assert.That(sim.UsefulFlops, Is.EqualTo(24 * 16));
            Assert.That(sim.VisitedFlops, Is.EqualTo(48 * 16));
            Assert.That(sim.FlopBoundSpeedup, Is.EqualTo(64.0 / 24).Within(1e-12));
            Assert.That(sim.PerfectlyBlockSparse, Is.False);
        }

        var perTile = sim.QueryTileVisits().ToArray();
        Assert.That(perTile.Select(t => (t.Queries, t.Visited, t.Unmasked)), Is.EqualTo(new[] { (4L, 3L, 0L), (4L, 3L, 0L) }));
    }

    /// <summary>Blocked attention (n = 8, K = s = 4) with query tile 4 and KV sub-tile 2: every tile sees one block, two unmasked sub-tiles.</summary>
    [Test]
    public void BlockedAttentionIsPerfectlyBlockSparse()
    {
        var shape = new AttentionShape(1, 8, 1, 4);
        var sim = FusedTuning.Simulate(shape, new NeighborhoodAttentionOptions(4) { Stride = 4, Tiles = new FusedTiles(4, 2) });
        using (Assert.EnterMultipleScope())
        {
            Assert.That(sim.VisitedSubTiles, Is.EqualTo(4));
            Assert.That(sim.UnmaskedSubTiles, Is.EqualTo(4));
            Assert.That(sim.PerfectlyBlockSparse, Is.True);
            Assert.That(sim.MeetsBlockSparseRule, Is.True);
            Assert.That(sim.UpperBoundSpeedup, Is.EqualTo(2.0));
            Assert.That(sim.FlopBoundSpeedup, Is.EqualTo(2.0));
            Assert.That(sim.VisitedFlops, Is.EqualTo(sim.UsefulFlops));
        }
    }

    /// <summary>
    /// 2D 4×4, K = 3, tiles 2×2 / 2×2. Per axis: tile 0 (queries 0, 1) has range [0, 3), core [0, 3):
    /// sub-tile [0, 2) inside, [2, 4) not; tile 1 (queries 2, 3) range [1, 4), core [1, 4): [1, 3)
    /// inside, [3, 5) not. So each of the 4 query tiles visits 2×2 = 4 sub-tiles, 1×1 unmasked.
    /// </summary>
    [Test]
    public void TwoDimensionalByHand()
    {
        var shape = new AttentionShape(1, (4, 4), 1, 4);
        var sim = FusedTuning.Simulate(shape, new NeighborhoodAttentionOptions(3) { Tiles = new FusedTiles(2, 2) });
        using (Assert.EnterMultipleScope())
        {
            Assert.That(sim.QueryTiles, Is.EqualTo(4));
            Assert.That(sim.VisitedSubTiles, Is.EqualTo(16));
            Assert.That(sim.UnmaskedSubTiles, Is.EqualTo(4));
            Assert.That(sim.PartiallyMaskedSubTiles, Is.EqualTo(12));
            Assert.That(sim.MaxVisited, Is.EqualTo(4));
            Assert.That(sim.MinVisited, Is.EqualTo(4));
            Assert.That(sim.FullAttentionSubTiles, Is.EqualTo(4));
            Assert.That(sim.UpperBoundSpeedup, Is.EqualTo(1.0));
            Assert.That(sim.QueryTileVisits().Select(t => t.TileIndex.ToArray()), Is.EqualTo(new[] { new[] { 0, 0 }, [0, 1], [1, 0], [1, 1] }));
        }
    }

    /// <summary>Dilation 2 on n = 7: groups of 4 and 3 queries; with a query tile of 4 each group is one tile, and a tile of 3 leaves group 1 with one tile and group 0 with two.</summary>
    [Test]
    public void DilationGroupsAndEmptyTiles()
    {
        var shape = new AttentionShape(1, 7, 1, 4);
        var sim = FusedTuning.Simulate(shape, new NeighborhoodAttentionOptions(3) { Dilation = 2, Tiles = new FusedTiles(3, 1) });
        var tiles = sim.QueryTileVisits().ToArray();
        using (Assert.EnterMultipleScope())
        {
            // TilesPerGroup = ⌈⌈7/2⌉/3⌉ = 2 per group, 2 groups: group 0 has 3 + 1 queries, group 1 has 3 + 0.
            Assert.That(tiles.Select(t => t.Queries), Is.EqualTo(new long[] { 3, 1, 3, 0 }));
            Assert.That(sim.NonEmptyQueryTiles, Is.EqualTo(3));
            Assert.That(tiles[3].Visited, Is.Zero);
            Assert.That(sim.UsefulFlops, Is.EqualTo(AttentionFlops.Forward(shape, new NeighborhoodAttentionOptions(3) { Dilation = 2 })));
        }
    }

    public static IEnumerable<TestCaseData> Seeds()
        => Enumerable.Range(1, 40).Select(s => new TestCaseData(s).SetName($"{{m}}(seed {s})"));

    /// <summary>
    /// The simulator against the kernel's loops: the launch grid of <see cref="FnaForward.Forward{T, TS}"/>,
    /// the kernels' decoder of Grid.IdxX (<see cref="TileAxis.ForGridIndex"/>), the early exit of empty
    /// tiles and the three nested sub-tile loops of <see cref="FnaForwardKernel.Forward{T, TS}"/> (the
    /// tensor-core kernel walks the same) with its mask test, written out here (the kernel gets no
    /// counter). Allowed pairs come from the window rule, one pair at a time.
    /// </summary>
    [TestCaseSource(nameof(Seeds))]
    public void VisitsWhatTheKernelVisits(int seed)
    {
        var problem = RandomProblem.Create(seed + 4242, maxTokens: 400, allowAdditional: false);
        var rng = new Random(seed);
        var rank = problem.Shape.Rank;
        var q = Enumerable.Range(0, rank).Select(_ => rng.Next(1, 9)).ToArray();
        var k = Enumerable.Range(0, rank).Select(_ => rng.Next(1, 9)).ToArray();
        var options = problem.Options with { Tiles = new FusedTiles(AxisValues.PerAxis(q), AxisValues.PerAxis(k)) };
        var s = problem.Shape;
        var spatial = Enumerable.Range(0, rank).Select(a => s.Spatial[a]).ToArray();
        var p = new ProblemParams(
            s.Batch, s.Heads, s.KvHeads, s.HeadDim, s.ValueDim, 0, spatial,
            Resolve(options.KernelSize, rank), Resolve(options.Stride, rank), Resolve(options.Dilation, rank),
            Enumerable.Range(0, rank).Select(a => options.Causal[a]).ToArray(), 1.0);
        var pad = 3 - rank;
        int At(int[] v, int axis) => axis < pad ? 1 : v[axis - pad];
        var tile = new FnaTileShape(At(q, 0), At(q, 1), At(q, 2), At(k, 0), At(k, 1), At(k, 2));

        var expected = KernelWalk(p, tile);
        var model = new FnaSimulator(p, tile, KvTilingMode.Dynamic);
        var simulated = model.Tiles().Select(t => (t.Visited, t.Unmasked, t.AllowedPairs)).ToArray();
        Assert.That(simulated, Is.EqualTo(expected), $"{problem}, tiles {options.Tiles}");

        var sim = FusedTuning.Simulate(s, options);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(sim.VisitedSubTiles, Is.EqualTo(expected.Sum(e => e.Visited)));
            Assert.That(sim.MaxVisited, Is.EqualTo(expected.Max(e => e.Visited)));
            Assert.That(sim.FullyMaskedSubTiles, Is.Zero, "union ranges are contiguous per axis");
            Assert.That(sim.UsefulFlops, Is.EqualTo(AttentionFlops.Forward(s, options)).Within(1e-9).Percent);
            if (sim.MeetsBlockSparseRule)
            {
                Assert.That(sim.PerfectlyBlockSparse, Is.True, "the published rule is sufficient");
            }
        }
    }

    /// <summary>The kernel's loops, per query tile in launch order: (sub-tiles visited, unmasked, allowed pairs).</summary>
    private static (long Visited, long Unmasked, double Pairs)[] KernelWalk(ProblemParams p, FnaTileShape tile)
    {
        var tiles = p.D0 * FnaForwardKernel.TilesPerGroup(p.N0, p.D0, tile.Q0)
            * p.D1 * FnaForwardKernel.TilesPerGroup(p.N1, p.D1, tile.Q1)
            * p.D2 * FnaForwardKernel.TilesPerGroup(p.N2, p.D2, tile.Q2);
        var result = new (long, long, double)[tiles];
        for (var x = 0; x < tiles; x++)
        {
            // The kernels' own decoder of Grid.IdxX.
            TileAxis.ForGridIndex(p, tile, x, out var axis0, out var axis1, out var axis2);
            if (axis0.IsEmpty || axis1.IsEmpty || axis2.IsEmpty)
            {
                continue;
            }

            long visited = 0, unmasked = 0;
            double pairs = 0;
            for (var a0 = axis0.RangeStart; a0 < axis0.RangeEnd; a0 += tile.K0)
            {
                for (var a1 = axis1.RangeStart; a1 < axis1.RangeEnd; a1 += tile.K1)
                {
                    for (var a2 = axis2.RangeStart; a2 < axis2.RangeEnd; a2 += tile.K2)
                    {
                        visited++;
                        if (axis0.InsideEveryWindow(a0, tile.K0) && axis1.InsideEveryWindow(a1, tile.K1) && axis2.InsideEveryWindow(a2, tile.K2))
                        {
                            unmasked++;
                        }

                        pairs += AllowedPairs(p, axis0, axis1, axis2, tile, a0, a1, a2);
                    }
                }
            }

            result[x] = (visited, unmasked, pairs);
        }

        return result;
    }

    /// <summary>Allowed (query, key) pairs in one sub-tile, by the window rule on original coordinates, one pair at a time.</summary>
    private static double AllowedPairs(ProblemParams p, TileAxis axis0, TileAxis axis1, TileAxis axis2, FnaTileShape tile, int a0, int a1, int a2)
    {
        var count = 0;
        for (var q0 = 0; q0 < axis0.Count; q0++)
        {
            for (var q1 = 0; q1 < axis1.Count; q1++)
            {
                for (var q2 = 0; q2 < axis2.Count; q2++)
                {
                    for (var j0 = a0; j0 < a0 + tile.K0; j0++)
                    {
                        for (var j1 = a1; j1 < a1 + tile.K1; j1++)
                        {
                            for (var j2 = a2; j2 < a2 + tile.K2; j2++)
                            {
                                if (Sees(axis0, q0, j0) && Sees(axis1, q1, j1) && Sees(axis2, q2, j2))
                                {
                                    count++;
                                }
                            }
                        }
                    }
                }
            }
        }

        return count;

        bool Sees(TileAxis axis, int local, int inGroup)
        {
            if (inGroup >= axis.GroupLength)
            {
                return false;
            }

            WindowRule.KeyRange(axis.Coordinate(local), axis.Length, axis.Kernel, axis.Stride, axis.Dilation, axis.Causal != 0, out var first, out var n);
            var key = axis.Original(inGroup);
            return key >= first && key < first + (n * axis.Dilation) && (key - first) % axis.Dilation == 0;
        }
    }

    private static int[] Resolve(AxisValues values, int rank)
        => [.. Enumerable.Range(0, rank).Select(a => !values.IsSpecified ? 1 : values.IsUniform ? values[0] : values[a])];
}
