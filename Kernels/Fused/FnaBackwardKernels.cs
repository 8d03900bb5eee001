using ILGPU;
using ILGPU.Algorithms;
using Natten.Kernels.Common;

namespace Natten.Kernels.Fused;

/// <summary>
/// Fused backward (FlashAttention-2 style, float32 math), deterministic: no atomics, every gradient
/// element is written by exactly one thread that sums in a fixed order.
/// <list type="bullet">
/// <item><see cref="QueryGrad{T,TS}"/>: one group per query tile (as the forward): recompute P = exp(s − LSE)
/// from Q, K and the saved LSE, dP = dO·v, dS = P (dP − D) with D = rowsum(dO ∘ O), dQ = scale Σ dS k.</item>
/// <item><see cref="KeyValueGrad{T,TS}"/>: one group per key tile and kv head, one thread per key; walks the
/// inverse neighborhood (the queries that see the tile's keys, of every query head of the kv group) in
/// query sub-tiles: dV = Σ P dO, dK = scale Σ dS q.</item>
/// <item><see cref="AdditionalKeyValueGrad{T,TS}"/>: one group per additional token and kv head: every query row
/// sees it; threads take rows in a fixed stride and reduce their partial sums in a fixed tree.</item>
/// </list>
/// The only workspace is D, one float per query row (B·N·H), computed by <see cref="RowTerm{T,TS}"/>.
/// </summary>
internal static class FnaBackwardKernels
{
    private const float Log2E = 1.4426950408889634f;

    /// <summary>D[row] = dO · O, one thread per query row.</summary>
    public static void RowTerm<T, TS>(Index1D index, ProblemParams p, long count, int stride, ArrayView<T> output, ArrayView<T> outputGrad, ArrayView<float> rowTerm)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        for (long row = index.X; row < count; row += stride)
        {
            var acc = 0f;
            for (var c = 0; c < p.ValueDim; c++)
            {
                acc += TS.Load(output[(row * p.ValueDim) + c]) * TS.Load(outputGrad[(row * p.ValueDim) + c]);
            }

            rowTerm[row] = acc;
        }
    }

    public static void QueryGrad<T, TS>(
        ProblemParams p, FnaTileShape tile, ArrayView<T> query, ArrayView<T> key, ArrayView<T> value,
        ArrayView<T> additionalKey, ArrayView<T> additionalValue, ArrayView<float> lse, ArrayView<float> rowTerm,
        ArrayView<T> outputGrad, ArrayView<T> queryGrad)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        TileAxis.ForGridIndex(p, tile, Grid.IdxX, out var axis0, out var axis1, out var axis2);
        if (axis0.IsEmpty || axis1.IsEmpty || axis2.IsEmpty)
        {
            return;
        }

        var head = Grid.IdxY;
        var batch = Grid.IdxZ;
        var kvHead = p.KvHeadOf(head);
        var tid = Group.IdxX;
        var threads = Group.DimX;
        var qStride = p.HeadDim + 1;
        var oStride = p.ValueDim + 1;
        var shared = SharedMemory.GetDynamic<float>();
        var offset = 0;
        var qTile = Take(shared, ref offset, tile.QueryTile * qStride);
        var dqTile = Take(shared, ref offset, tile.QueryTile * qStride);
        var doTile = Take(shared, ref offset, tile.QueryTile * oStride);
        var kTile = Take(shared, ref offset, tile.KeyTile * p.HeadDim);
        var vTile = Take(shared, ref offset, tile.KeyTile * p.ValueDim);
        var qRow = qTile.SubView(tid * qStride, p.HeadDim);
        var dqRow = dqTile.SubView(tid * qStride, p.HeadDim);
        var doRow = doTile.SubView(tid * oStride, p.ValueDim);

        var q2 = tid % tile.Q2;
        var q1 = tid / tile.Q2 % tile.Q1;
        var q0 = tid / tile.Q2 / tile.Q1;
        var valid = axis0.HasQuery(q0) && axis1.HasQuery(q1) && axis2.HasQuery(q2);
        var row = (((batch * p.Tokens) + p.Token(axis0.Coordinate(q0), axis1.Coordinate(q1), axis2.Coordinate(q2))) * p.Heads) + head;
        var window = new WindowMask(
            axis0.WindowStart(q0), axis0.WindowEnd(q0), axis1.WindowStart(q1), axis1.WindowEnd(q1), axis2.WindowStart(q2), axis2.WindowEnd(q2));

        // Q pre-scaled into the log2 domain, like the forward; dO row; dQ accumulator.
        var queryScale = p.Scale * Log2E;
        for (var c = 0; c < p.HeadDim; c++)
        {
            qRow[c] = valid ? TS.Load(query[(row * p.HeadDim) + c]) * queryScale : 0f;
            dqRow[c] = 0f;
        }

        for (var c = 0; c < p.ValueDim; c++)
        {
            doRow[c] = valid ? TS.Load(outputGrad[(row * p.ValueDim) + c]) : 0f;
        }

        var lse2 = valid ? lse[row] * Log2E : 0f;
        var term = valid ? rowTerm[row] : 0f;

        for (var a0 = axis0.RangeStart; a0 < axis0.RangeEnd; a0 += tile.K0)
        {
            for (var a1 = axis1.RangeStart; a1 < axis1.RangeEnd; a1 += tile.K1)
            {
                for (var a2 = axis2.RangeStart; a2 < axis2.RangeEnd; a2 += tile.K2)
                {
                    Group.Barrier();
                    FnaForwardKernel.StageNeighborhood<T, TS>(p, tile, axis0, axis1, axis2, a0, a1, a2, batch, kvHead, key, value, kTile, vTile, tid, threads);
                    Group.Barrier();
                    if (!valid)
                    {
                        continue;
                    }

                    if (axis0.InsideEveryWindow(a0, tile.K0) && axis1.InsideEveryWindow(a1, tile.K1) && axis2.InsideEveryWindow(a2, tile.K2))
                    {
                        AccumulateQueryGrad(new NoMask(), a0, a1, a2, tile.K1, tile.K2, tile.KeyTile, p, qRow, doRow, dqRow, kTile, vTile, lse2, term);
                    }
                    else
                    {
                        AccumulateQueryGrad(window, a0, a1, a2, tile.K1, tile.K2, tile.KeyTile, p, qRow, doRow, dqRow, kTile, vTile, lse2, term);
                    }
                }
            }
        }

        for (var m = 0; m < p.AdditionalTokens; m += tile.KeyTile)
        {
            Group.Barrier();
            FnaForwardKernel.StageAdditional<T, TS>(p, tile, m, batch, kvHead, additionalKey, additionalValue, kTile, vTile, tid, threads);
            Group.Barrier();
            if (valid)
            {
                AccumulateQueryGrad(new PrefixMask(p.AdditionalTokens - m), 0, 0, 0, 1, tile.KeyTile, tile.KeyTile, p, qRow, doRow, dqRow, kTile, vTile, lse2, term);
            }
        }

        if (valid)
        {
            for (var c = 0; c < p.HeadDim; c++)
            {
                queryGrad[(row * p.HeadDim) + c] = TS.Store(dqRow[c] * p.Scale);
            }
        }
    }

    public static void KeyValueGrad<T, TS>(
        ProblemParams p, FnaTileShape tile, ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<float> lse,
        ArrayView<float> rowTerm, ArrayView<T> outputGrad, ArrayView<T> keyGrad, ArrayView<T> valueGrad)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        // Roles swap: the group's tile holds keys (extents tile.Q*), the staged sub-tiles hold queries (extents tile.K*).
        InverseTileAxis.ForGridIndex(p, tile, Grid.IdxX, out var axis0, out var axis1, out var axis2);
        if (axis0.IsEmpty || axis1.IsEmpty || axis2.IsEmpty)
        {
            return;
        }

        var kvHead = Grid.IdxY;
        var batch = Grid.IdxZ;
        var group = p.Heads / p.KvHeads;
        var tid = Group.IdxX;
        var threads = Group.DimX;
        var kStride = p.HeadDim + 1;
        var vStride = p.ValueDim + 1;
        var shared = SharedMemory.GetDynamic<float>();
        var offset = 0;
        var kTile = Take(shared, ref offset, tile.QueryTile * kStride);
        var dkTile = Take(shared, ref offset, tile.QueryTile * kStride);
        var vTile = Take(shared, ref offset, tile.QueryTile * vStride);
        var dvTile = Take(shared, ref offset, tile.QueryTile * vStride);
        var qSub = Take(shared, ref offset, tile.KeyTile * p.HeadDim);
        var doSub = Take(shared, ref offset, tile.KeyTile * p.ValueDim);
        var lseSub = Take(shared, ref offset, tile.KeyTile);
        var termSub = Take(shared, ref offset, tile.KeyTile);
        var kRow = kTile.SubView(tid * kStride, p.HeadDim);
        var dkRow = dkTile.SubView(tid * kStride, p.HeadDim);
        var vRow = vTile.SubView(tid * vStride, p.ValueDim);
        var dvRow = dvTile.SubView(tid * vStride, p.ValueDim);

        var k2 = tid % tile.Q2;
        var k1 = tid / tile.Q2 % tile.Q1;
        var k0 = tid / tile.Q2 / tile.Q1;
        var valid = axis0.HasKey(k0) && axis1.HasKey(k1) && axis2.HasKey(k2);
        var keyRow = (((batch * p.Tokens) + p.Token(axis0.Coordinate(k0), axis1.Coordinate(k1), axis2.Coordinate(k2))) * p.KvHeads) + kvHead;
        var j0 = axis0.First + k0;
        var j1 = axis1.First + k1;
        var j2 = axis2.First + k2;

        // K pre-scaled into the log2 domain (s2 = q·k_scaled), V row, and the two accumulators.
        var keyScale = p.Scale * Log2E;
        for (var c = 0; c < p.HeadDim; c++)
        {
            kRow[c] = valid ? TS.Load(key[(keyRow * p.HeadDim) + c]) * keyScale : 0f;
            dkRow[c] = 0f;
        }

        for (var c = 0; c < p.ValueDim; c++)
        {
            vRow[c] = valid ? TS.Load(value[(keyRow * p.ValueDim) + c]) : 0f;
            dvRow[c] = 0f;
        }

        for (var a0 = axis0.RangeStart; a0 < axis0.RangeEnd; a0 += tile.K0)
        {
            for (var a1 = axis1.RangeStart; a1 < axis1.RangeEnd; a1 += tile.K1)
            {
                for (var a2 = axis2.RangeStart; a2 < axis2.RangeEnd; a2 += tile.K2)
                {
                    var inside = axis0.InsideEveryRange(a0, tile.K0) && axis1.InsideEveryRange(a1, tile.K1) && axis2.InsideEveryRange(a2, tile.K2);
                    for (var h = kvHead * group; h < (kvHead + 1) * group; h++)
                    {
                        Group.Barrier();
                        StageQueries<T, TS>(p, tile, axis0, axis1, axis2, a0, a1, a2, batch, h, query, outputGrad, lse, rowTerm, qSub, doSub, lseSub, termSub, tid, threads);
                        Group.Barrier();
                        if (!valid)
                        {
                            continue;
                        }

                        for (var slot = 0; slot < tile.KeyTile; slot++)
                        {
                            var i2 = a2 + (slot % tile.K2);
                            var i1 = a1 + (slot / tile.K2 % tile.K1);
                            var i0 = a0 + (slot / tile.K2 / tile.K1);
                            if (!inside && !(i0 < axis0.RangeEnd && i1 < axis1.RangeEnd && i2 < axis2.RangeEnd
                                && axis0.Sees(i0, j0) && axis1.Sees(i1, j1) && axis2.Sees(i2, j2)))
                            {
                                continue;
                            }

                            AccumulateKeyValueGrad(p, slot, qSub, doSub, lseSub, termSub, kRow, vRow, dkRow, dvRow);
                        }
                    }
                }
            }
        }

        if (valid)
        {
            for (var c = 0; c < p.HeadDim; c++)
            {
                keyGrad[(keyRow * p.HeadDim) + c] = TS.Store(dkRow[c] * p.Scale);
            }

            for (var c = 0; c < p.ValueDim; c++)
            {
                valueGrad[(keyRow * p.ValueDim) + c] = TS.Store(dvRow[c]);
            }
        }
    }

    /// <summary>
    /// d(additional K) and d(additional V) of one (token m, kv head, batch): every query row of the batch
    /// entry and kv group sees the token. Thread t takes rows t, t + threads, …; partial sums then
    /// meet in a fixed binary tree in shared memory, so the result does not depend on timing.
    /// </summary>
    public static void AdditionalKeyValueGrad<T, TS>(
        ProblemParams p, ArrayView<T> query, ArrayView<T> additionalKey, ArrayView<T> additionalValue, ArrayView<float> lse,
        ArrayView<float> rowTerm, ArrayView<T> outputGrad, ArrayView<T> additionalKeyGrad, ArrayView<T> additionalValueGrad)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        var m = Grid.IdxX;
        var kvHead = Grid.IdxY;
        var batch = Grid.IdxZ;
        var tid = Group.IdxX;
        var threads = Group.DimX;
        var width = p.HeadDim + p.ValueDim;
        var shared = SharedMemory.GetDynamic<float>();
        var partial = shared.SubView(tid * width, width);
        for (var c = 0; c < width; c++)
        {
            partial[c] = 0f;
        }

        var tokenRow = (((long)batch * p.AdditionalTokens) + m) * p.KvHeads + kvHead;
        var group = p.Heads / p.KvHeads;
        var rows = p.Tokens * group;
        for (long r = tid; r < rows; r += threads)
        {
            var row = (((batch * p.Tokens) + (r / group)) * p.Heads) + (kvHead * group) + (r % group);
            var score = 0f;
            for (var c = 0; c < p.HeadDim; c++)
            {
                score += TS.Load(query[(row * p.HeadDim) + c]) * TS.Load(additionalKey[(tokenRow * p.HeadDim) + c]);
            }

            var prob = XMath.Exp2((score * p.Scale * Log2E) - (lse[row] * Log2E));
            var dp = 0f;
            for (var c = 0; c < p.ValueDim; c++)
            {
                dp += TS.Load(outputGrad[(row * p.ValueDim) + c]) * TS.Load(additionalValue[(tokenRow * p.ValueDim) + c]);
            }

            var ds = prob * (dp - rowTerm[row]);
            for (var c = 0; c < p.HeadDim; c++)
            {
                partial[c] += ds * TS.Load(query[(row * p.HeadDim) + c]);
            }

            for (var c = 0; c < p.ValueDim; c++)
            {
                partial[p.HeadDim + c] += prob * TS.Load(outputGrad[(row * p.ValueDim) + c]);
            }
        }

        // Fixed-order tree reduction over the group (its size is a power of two).
        for (var half = threads / 2; half > 0; half /= 2)
        {
            Group.Barrier();
            if (tid < half)
            {
                var other = shared.SubView((tid + half) * width, width);
                for (var c = 0; c < width; c++)
                {
                    partial[c] += other[c];
                }
            }
        }

        Group.Barrier();
        if (tid == 0)
        {
            for (var c = 0; c < p.HeadDim; c++)
            {
                additionalKeyGrad[(tokenRow * p.HeadDim) + c] = TS.Store(partial[c] * p.Scale);
            }

            for (var c = 0; c < p.ValueDim; c++)
            {
                additionalValueGrad[(tokenRow * p.ValueDim) + c] = TS.Store(partial[p.HeadDim + c]);
            }
        }
    }

    /// <summary>dQ += Σ dS · k over the staged keys the mask allows (dQ unscaled: the caller multiplies by scale at the end).</summary>
    private static void AccumulateQueryGrad<TMask>(
        TMask mask, int a0, int a1, int a2, int extent1, int extent2, int slots, ProblemParams p,
        ArrayView<float> qRow, ArrayView<float> doRow, ArrayView<float> dqRow, ArrayView<float> kTile, ArrayView<float> vTile, float lse2, float term)
        where TMask : struct, IKeyMask
    {
        for (var slot = 0; slot < slots; slot++)
        {
            var j2 = a2 + (slot % extent2);
            var j1 = a1 + (slot / extent2 % extent1);
            var j0 = a0 + (slot / extent2 / extent1);
            if (!mask.Allows(j0, j1, j2))
            {
                continue;
            }

            var k = slot * p.HeadDim;
            var score = 0f;
            for (var c = 0; c < p.HeadDim; c++)
            {
                score += qRow[c] * kTile[k + c];
            }

            var prob = XMath.Exp2(score - lse2);
            var v = slot * p.ValueDim;
            var dp = 0f;
            for (var c = 0; c < p.ValueDim; c++)
            {
                dp += doRow[c] * vTile[v + c];
            }

            var ds = prob * (dp - term);
            for (var c = 0; c < p.HeadDim; c++)
            {
                dqRow[c] += ds * kTile[k + c];
            }
        }
    }

    /// <summary>dV += P · dO and dK += dS · q (unscaled) for one staged query.</summary>
    private static void AccumulateKeyValueGrad(
        ProblemParams p, int slot, ArrayView<float> qSub, ArrayView<float> doSub, ArrayView<float> lseSub, ArrayView<float> termSub,
        ArrayView<float> kRow, ArrayView<float> vRow, ArrayView<float> dkRow, ArrayView<float> dvRow)
    {
        var q = slot * p.HeadDim;
        var score = 0f;
        for (var c = 0; c < p.HeadDim; c++)
        {
            score += qSub[q + c] * kRow[c];
        }

        var prob = XMath.Exp2(score - lseSub[slot]);
        var o = slot * p.ValueDim;
        var dp = 0f;
        for (var c = 0; c < p.ValueDim; c++)
        {
            dp += doSub[o + c] * vRow[c];
            dvRow[c] += prob * doSub[o + c];
        }

        var ds = prob * (dp - termSub[slot]);
        for (var c = 0; c < p.HeadDim; c++)
        {
            dkRow[c] += ds * qSub[q + c];
        }
    }

    /// <summary>Stages the Q and dO rows, LSE (log2 domain) and D of one query sub-tile for head <paramref name="head"/>.</summary>
    private static void StageQueries<T, TS>(
        ProblemParams p, FnaTileShape tile, InverseTileAxis axis0, InverseTileAxis axis1, InverseTileAxis axis2, int a0, int a1, int a2,
        int batch, int head, ArrayView<T> query, ArrayView<T> outputGrad, ArrayView<float> lse, ArrayView<float> rowTerm,
        ArrayView<float> qSub, ArrayView<float> doSub, ArrayView<float> lseSub, ArrayView<float> termSub, int tid, int threads)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        for (var e = tid; e < tile.KeyTile * p.HeadDim; e += threads)
        {
            var row = InverseTileAxis.QueryRow(p, tile, axis0, axis1, axis2, a0, a1, a2, e / p.HeadDim, batch, head);
            qSub[e] = row < 0 ? 0f : TS.Load(query[(row * p.HeadDim) + (e % p.HeadDim)]);
        }

        for (var e = tid; e < tile.KeyTile * p.ValueDim; e += threads)
        {
            var row = InverseTileAxis.QueryRow(p, tile, axis0, axis1, axis2, a0, a1, a2, e / p.ValueDim, batch, head);
            doSub[e] = row < 0 ? 0f : TS.Load(outputGrad[(row * p.ValueDim) + (e % p.ValueDim)]);
        }

        for (var slot = tid; slot < tile.KeyTile; slot += threads)
        {
            var row = InverseTileAxis.QueryRow(p, tile, axis0, axis1, axis2, a0, a1, a2, slot, batch, head);
            lseSub[slot] = row < 0 ? 0f : lse[row] * Log2E;
            termSub[slot] = row < 0 ? 0f : rowTerm[row];
        }
    }

    private static ArrayView<float> Take(ArrayView<float> shared, ref int offset, int length)
    {
        var view = shared.SubView(offset, length);
        offset += length;
        return view;
    }
}
