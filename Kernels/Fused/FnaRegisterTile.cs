using System.Runtime.CompilerServices;
using ILGPU;
using Natten.Kernels.Common;
using Natten.Kernels.Cuda;

namespace Natten.Kernels.Fused;

/// <summary>
/// The online-softmax state of the two rows a lane holds in the m16n8 accumulator layout: rows g ("top")
/// and g + 8 ("bottom") of its warp. Max in the log2 domain of the scaled scores; the sums are this lane's
/// partial sums (its two columns of every n-tile), reduced over the quad only at the end (FlashAttention-2).
/// </summary>
internal struct RowState
{
    public float MaxTop;
    public float MaxBottom;
    public float SumTop;
    public float SumBottom;

    /// <summary>No key seen yet: max −∞, sums 0.</summary>
    public static RowState Start()
    {
        RowState state;
        state.MaxTop = float.NegativeInfinity;
        state.MaxBottom = float.NegativeInfinity;
        state.SumTop = 0f;
        state.SumBottom = 0f;
        return state;
    }
}

/// <summary>
/// Maps a staged key slot to its group coordinates: slot s of the sub-tile starting at (a0, a1, a2) with
/// extents (·, e1, e2) is (a0 + s / e2 / e1, a1 + s / e2 % e1, a2 + s % e2). Additional tokens use
/// (0, 0, 0, 1, keys): the slot itself on axis 2.
/// </summary>
internal readonly struct KeySlots
{
    public readonly int A0, A1, A2, Extent1, Extent2;

    public KeySlots(int a0, int a1, int a2, int extent1, int extent2)
    {
        (A0, A1, A2, Extent1, Extent2) = (a0, a1, a2, extent1, extent2);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Allows<TMask>(TMask mask, int slot)
        where TMask : struct, IKeyMask
        => mask.Allows(A0 + (slot / Extent2 / Extent1), A1 + (slot / Extent2 % Extent1), A2 + (slot % Extent2));
}

/// <summary>
/// Hand-written pieces shared by the generated register-resident tensor-core forwards
/// (<c>Kernels/Fused/Generated/FnaTensorCoreKernel.D*.g.cs</c>) and query-gradient kernels
/// (<c>Kernels/Fused/Generated/FnaTensorCoreQueryGradKernel.D*.g.cs</c>): staging Q (or dO), the per-row window masks,
/// per-element masking of one m16n8 score tile, and packing P into 16-bit pairs. None of them indexes a
/// per-thread array: every fragment register is a scalar passed by reference.
/// </summary>
internal static class FnaRegisterTile
{
    /// <summary>scale · log2 e is folded into the scores, so the softmax runs on exp2.</summary>
    public const float Log2E = 1.4426950408889634f;

    /// <summary>ln 2: the log-sum-exp is returned in natural log.</summary>
    public const float Ln2 = 0.6931471805599453f;

    /// <summary>Stages the tile's queries (unscaled) with rows <paramref name="stride"/> 16-bit words apart; absent queries are zero.</summary>
    public static void StageQuery(
        ProblemParams p, FnaTileShape tile, TileAxis axis0, TileAxis axis1, TileAxis axis2, int batch, int head,
        ArrayView<ushort> query, ArrayView<ushort> qTile, int stride, int tid, int threads)
    {
        for (var e = tid; e < tile.QueryTile * p.HeadDim; e += threads)
        {
            var local = e / p.HeadDim;
            var row = TileAxis.QueryRow(p, tile, axis0, axis1, axis2, local, batch, head);
            qTile[(local * stride) + (e % p.HeadDim)] = row < 0 ? (ushort)0 : query[(row * p.HeadDim) + (e % p.HeadDim)];
        }
    }

    /// <summary>
    /// The window of tile-local query <paramref name="local"/> in group coordinates (an absent query gets the
    /// last query's window: finite scores, never stored).
    /// </summary>
    public static WindowMask Window(FnaTileShape tile, TileAxis axis0, TileAxis axis1, TileAxis axis2, int local)
    {
        var q2 = local % tile.Q2;
        var q1 = local / tile.Q2 % tile.Q1;
        var q0 = local / tile.Q2 / tile.Q1;
        return new WindowMask(
            axis0.WindowStart(q0), axis0.WindowEnd(q0), axis1.WindowStart(q1), axis1.WindowEnd(q1), axis2.WindowStart(q2), axis2.WindowEnd(q2));
    }

    /// <summary>
    /// Scales one m16n8 score tile (lane (g, t): c0, c1 = row g, key slots <paramref name="slot"/>, slot + 1;
    /// c2, c3 = row g + 8, same slots) by <paramref name="scale"/> and sets masked elements to −∞. With
    /// <see cref="NoMask"/> the predicates are constant and the compiler drops them.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Mask<TMask>(
        TMask top, TMask bottom, KeySlots slots, int slot, float scale, ref float c0, ref float c1, ref float c2, ref float c3)
        where TMask : struct, IKeyMask
    {
        c0 = slots.Allows(top, slot) ? c0 * scale : float.NegativeInfinity;
        c1 = slots.Allows(top, slot + 1) ? c1 * scale : float.NegativeInfinity;
        c2 = slots.Allows(bottom, slot) ? c2 * scale : float.NegativeInfinity;
        c3 = slots.Allows(bottom, slot + 1) ? c3 * scale : float.NegativeInfinity;
    }

    /// <summary>Two probabilities rounded to the input format and packed (the lower column in the low half): one A-fragment register.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Pack<TFormat>(float low, float high)
        where TFormat : struct, IHalfFormat
        => TensorCore.Pack(TFormat.FromFloat(low), TFormat.FromFloat(high));

    /// <summary>
    /// The saved LSE of <paramref name="row"/> in the log2 domain for the backward's P = exp2(S − LSE); 0 for an absent
    /// row (row &lt; 0) or one without keys (LSE −∞: every score is masked, and −∞ − 0 keeps P at 0 instead of NaN).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float RowLse(ArrayView<float> lse, long row)
    {
        var value = row < 0 ? 0f : lse[row];
        return value == float.NegativeInfinity ? 0f : value * Log2E;
    }

    /// <summary>The natural-log LSE of a row from its log2-domain max and its (quad-reduced) sum; −∞ for a row without keys.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float LogSumExp(float max, float sum) => sum == 0f ? float.NegativeInfinity : (max + ILGPU.Algorithms.XMath.Log2(sum)) * Ln2;
}
