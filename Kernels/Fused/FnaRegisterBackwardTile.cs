using System.Runtime.CompilerServices;
using ILGPU;
using Natten.Kernels.Common;
using Natten.Kernels.Cuda;

namespace Natten.Kernels.Fused;

/// <summary>
/// Hand-written pieces of the generated register-resident dK/dV kernels
/// (<c>Kernels/Fused/Generated/FnaTensorCoreKeyValueGradKernel.D*.g.cs</c>): the walk over query sub-tiles and query heads as
/// one step index, staging a query sub-tile of the inverse neighborhood with padded rows (through the kernel's
/// <see cref="IKvStaging"/>) and its per-query scalars, and the per-element "query sees key" predicate of the version-1 kernel.
/// </summary>
internal static class FnaRegisterBackwardTile
{
    /// <summary>
    /// Stages the tile's keys (or values: <paramref name="source"/>) with rows <paramref name="stride"/> 16-bit words
    /// apart; absent keys are zero. D = Dv, so one width serves both.
    /// </summary>
    public static void StageKeys(
        ProblemParams p, FnaTileShape tile, InverseTileAxis axis0, InverseTileAxis axis1, InverseTileAxis axis2, int batch, int kvHead,
        ArrayView<ushort> source, ArrayView<ushort> target, int stride, int tid, int threads)
    {
        for (var e = tid; e < tile.QueryTile * p.HeadDim; e += threads)
        {
            var local = e / p.HeadDim;
            var row = InverseTileAxis.KeyRow(p, tile, axis0, axis1, axis2, local, batch, kvHead);
            target[(local * stride) + (e % p.HeadDim)] = row < 0 ? (ushort)0 : source[(row * p.HeadDim) + (e % p.HeadDim)];
        }
    }

    /// <summary>
    /// The dK/dV kernel's walk as one flat step index: query sub-tiles row-major over the axes (a0 outer) and, inside each, the
    /// kv group's query heads in order (the fixed order that keeps the reduction deterministic). <paramref name="steps1"/> and
    /// <paramref name="steps2"/> are the sub-tile counts of axes 1 and 2 (<see cref="SubTiles"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Step(
        FnaTileShape tile, InverseTileAxis axis0, InverseTileAxis axis1, InverseTileAxis axis2, int steps1, int steps2, int group, int kvHead,
        int step, out int a0, out int a1, out int a2, out int head)
    {
        var sub = step / group;
        head = (kvHead * group) + (step - (sub * group));
        a0 = axis0.RangeStart + (sub / steps2 / steps1 * tile.K0);
        a1 = axis1.RangeStart + (sub / steps2 % steps1 * tile.K1);
        a2 = axis2.RangeStart + (sub % steps2 * tile.K2);
    }

    /// <summary>Query sub-tiles of <paramref name="extent"/> slots along an axis's inverse range (0 for an empty range).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int SubTiles(InverseTileAxis axis, int extent)
        => axis.RangeEnd > axis.RangeStart ? (axis.RangeEnd - axis.RangeStart + extent - 1) / extent : 0;

    /// <summary>
    /// Issues the Q and dO rows of step <paramref name="step"/> of the walk (<see cref="Step"/>) into <paramref name="buffer"/>: Q rows
    /// at 0, dO rows at <c>tile.KeyTile · stride</c>, zero past the dilation group. <see cref="AsyncStaging"/> (<see cref="IKvStaging.Lookahead"/>
    /// &gt; 0) issues 16-byte <c>cp.async</c> copies, one query row per chunk for its Q and its dO copy (needs 16-byte aligned Q and dO
    /// views: the host checks); <see cref="ElementStaging"/> copies element by element, synchronously, as the kernel did before.
    /// </summary>
    public static void Stage<TStaging>(
        ProblemParams p, FnaTileShape tile, InverseTileAxis axis0, InverseTileAxis axis1, InverseTileAxis axis2, int steps1, int steps2, int group,
        int kvHead, int step, int batch, ArrayView<ushort> query, ArrayView<ushort> outputGrad, ArrayView<ushort> buffer, int stride, int tid, int threads)
        where TStaging : struct, IKvStaging
    {
        Step(tile, axis0, axis1, axis2, steps1, steps2, group, kvHead, step, out var a0, out var a1, out var a2, out var head);
        var queries = tile.KeyTile;
        var qSub = buffer.SubView(0, queries * stride);
        var doSub = buffer.SubView(queries * stride, queries * stride);
        if (TStaging.Lookahead > 0)
        {
            var chunks = p.HeadDim / AsyncCopy.Elements;
            for (var c = tid; c < queries * chunks; c += threads)
            {
                var slot = c / chunks;
                var column = (c - (slot * chunks)) * AsyncCopy.Elements;
                var row = InverseTileAxis.QueryRow(p, tile, axis0, axis1, axis2, a0, a1, a2, slot, batch, head);
                var at = (slot * stride) + column;
                AsyncCopy.Copy16(qSub, at, query, (row * p.HeadDim) + column, row >= 0);
                AsyncCopy.Copy16(doSub, at, outputGrad, (row * p.ValueDim) + column, row >= 0);
            }
        }
        else
        {
            for (var e = tid; e < queries * p.HeadDim; e += threads)
            {
                var slot = e / p.HeadDim;
                var row = InverseTileAxis.QueryRow(p, tile, axis0, axis1, axis2, a0, a1, a2, slot, batch, head);
                qSub[(slot * stride) + (e % p.HeadDim)] = row < 0 ? (ushort)0 : query[(row * p.HeadDim) + (e % p.HeadDim)];
                doSub[(slot * stride) + (e % p.HeadDim)] = row < 0 ? (ushort)0 : outputGrad[(row * p.HeadDim) + (e % p.HeadDim)];
            }
        }
    }

    /// <summary>
    /// Stages the per-query scalars of the query sub-tile at (a0, a1, a2) of head <paramref name="head"/>, synchronously: the LSE
    /// in the log2 domain and D per slot (0 for absent slots). One buffer serves every step: the kernel writes it after the
    /// barrier that ends the previous step's reads and before the barrier that precedes this step's.
    /// </summary>
    public static void StageQueryTerms(
        ProblemParams p, FnaTileShape tile, InverseTileAxis axis0, InverseTileAxis axis1, InverseTileAxis axis2, int a0, int a1, int a2,
        int batch, int head, ArrayView<float> lse, ArrayView<float> rowTerm, ArrayView<float> queryLse, ArrayView<float> queryD, int tid, int threads)
    {
        for (var slot = tid; slot < tile.KeyTile; slot += threads)
        {
            var row = InverseTileAxis.QueryRow(p, tile, axis0, axis1, axis2, a0, a1, a2, slot, batch, head);
            queryLse[slot] = FnaRegisterTile.RowLse(lse, row);
            queryD[slot] = row < 0 ? 0f : rowTerm[row];
        }
    }

    /// <summary>
    /// Whether tile-local key <paramref name="local"/> is present and seen by slot <paramref name="slot"/> of the query
    /// sub-tile at (a0, a1, a2); <paramref name="inside"/>: the sub-tile lies inside every key's queries.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Sees(
        FnaTileShape tile, InverseTileAxis axis0, InverseTileAxis axis1, InverseTileAxis axis2, bool inside, int a0, int a1, int a2, int local, int slot)
    {
        var k2 = local % tile.Q2;
        var k1 = local / tile.Q2 % tile.Q1;
        var k0 = local / tile.Q2 / tile.Q1;
        var i2 = a2 + (slot % tile.K2);
        var i1 = a1 + (slot / tile.K2 % tile.K1);
        var i0 = a0 + (slot / tile.K2 / tile.K1);
        return axis0.HasKey(k0) && axis1.HasKey(k1) && axis2.HasKey(k2)
            && (inside || (i0 < axis0.RangeEnd && i1 < axis1.RangeEnd && i2 < axis2.RangeEnd
                && axis0.Sees(i0, axis0.First + k0) && axis1.Sees(i1, axis1.First + k1) && axis2.Sees(i2, axis2.First + k2)));
    }

    /// <summary>Pᵀ = exp2(Sᵀ·scale − LSE) where the query sees the key, else 0; returns dSᵀ = Pᵀ (dPᵀ − D) and sets <paramref name="p"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ScoreGrad(bool sees, float s, float dp, float scoreScale, ArrayView<float> queryLse, ArrayView<float> queryD, int slot, out float p)
    {
        p = sees ? ILGPU.Algorithms.XMath.Exp2((s * scoreScale) - queryLse[slot]) : 0f;
        return p * (dp - queryD[slot]);
    }
}
