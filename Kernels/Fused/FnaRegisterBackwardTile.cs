using System.Runtime.CompilerServices;
using ILGPU;
using Natten.Kernels.Common;

namespace Natten.Kernels.Fused;

/// <summary>
/// Hand-written pieces of the generated register-resident dK/dV kernels
/// (<c>Kernels/Fused/Generated/FnaTensorCoreKeyValueGradKernel.D*.g.cs</c>): staging a query sub-tile of the inverse
/// neighborhood with padded rows, and the per-element "query sees key" predicate of the version-1 kernel.
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
    /// Stages the query sub-tile at (a0, a1, a2) of head <paramref name="head"/>: Q and dO rows <paramref name="stride"/>
    /// words apart (zero past the dilation group), the LSE in the log2 domain and D per slot (0 for absent slots).
    /// </summary>
    public static void StageQueries(
        ProblemParams p, FnaTileShape tile, InverseTileAxis axis0, InverseTileAxis axis1, InverseTileAxis axis2, int a0, int a1, int a2,
        int batch, int head, ArrayView<ushort> query, ArrayView<ushort> outputGrad, ArrayView<float> lse, ArrayView<float> rowTerm,
        ArrayView<ushort> qSub, ArrayView<ushort> doSub, int stride, ArrayView<float> queryLse, ArrayView<float> queryD, int tid, int threads)
    {
        for (var e = tid; e < tile.KeyTile * p.HeadDim; e += threads)
        {
            var slot = e / p.HeadDim;
            var row = InverseTileAxis.QueryRow(p, tile, axis0, axis1, axis2, a0, a1, a2, slot, batch, head);
            qSub[(slot * stride) + (e % p.HeadDim)] = row < 0 ? (ushort)0 : query[(row * p.HeadDim) + (e % p.HeadDim)];
            doSub[(slot * stride) + (e % p.HeadDim)] = row < 0 ? (ushort)0 : outputGrad[(row * p.HeadDim) + (e % p.HeadDim)];
        }

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
