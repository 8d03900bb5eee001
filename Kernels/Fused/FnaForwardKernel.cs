using ILGPU;
using Natten.Kernels.Common;

namespace Natten.Kernels.Fused;

/// <summary>
/// Fused neighborhood attention forward (FNA), float32 math: one group per (query tile, head,
/// batch), one thread per query of the tile. The tile's KV range is the union of its queries'
/// windows; it is walked in KV sub-tiles staged through shared memory. Sub-tiles inside every
/// window of the tile run without per-element masks; only boundary sub-tiles are masked. The
/// softmax is online (exp2 with log2 e folded into the query scale); output and LSE are written
/// once; the attention weights never exist in memory.
/// </summary>
/// <remarks>
/// Shared memory (dynamic, floats): Q rows [tile × (D+1)], O rows [tile × (Dv+1)] (each thread owns
/// its rows; the +1 keeps a warp's threads on different banks), K [sub-tile × D], V [sub-tile × Dv].
/// Dilation: a tile lives in one dilation group per axis (grid X enumerates group × tile), so the
/// window arithmetic is that of an undilated axis of the group's length.
/// </remarks>
internal static class FnaForwardKernel
{
    private const float Log2E = 1.4426950408889634f;

    public static void Forward<T, TS>(
        ProblemParams p, FnaTileShape tile, ArrayView<T> query, ArrayView<T> key, ArrayView<T> value,
        ArrayView<T> additionalKey, ArrayView<T> additionalValue, ArrayView<T> output, ArrayView<float> lse, int writeLse)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        // Which tile: grid X enumerates (dilation group, tile in group) per axis, row-major over the axes.
        TileAxis.ForGridIndex(p, tile, Grid.IdxX, out var axis0, out var axis1, out var axis2);
        if (axis0.IsEmpty || axis1.IsEmpty || axis2.IsEmpty)
        {
            return; // a short dilation group has fewer tiles; the whole group leaves together (no barrier yet)
        }

        var head = Grid.IdxY;
        var batch = Grid.IdxZ;
        var kvHead = p.KvHeadOf(head);
        var tid = Group.IdxX;
        var threads = Group.DimX;

        var qStride = p.HeadDim + 1;
        var oStride = p.ValueDim + 1;
        var shared = SharedMemory.GetDynamic<float>();
        var qTile = shared.SubView(0, tile.QueryTile * qStride);
        var oTile = shared.SubView(tile.QueryTile * qStride, tile.QueryTile * oStride);
        var kTile = shared.SubView(tile.QueryTile * (qStride + oStride), tile.KeyTile * p.HeadDim);
        var vTile = shared.SubView((tile.QueryTile * (qStride + oStride)) + (tile.KeyTile * p.HeadDim), tile.KeyTile * p.ValueDim);
        var qRow = qTile.SubView(tid * qStride, p.HeadDim);
        var oRow = oTile.SubView(tid * oStride, p.ValueDim);

        // This thread's query (group coordinates), and whether it exists (edge tiles are partial).
        var q2 = tid % tile.Q2;
        var q1 = tid / tile.Q2 % tile.Q1;
        var q0 = tid / tile.Q2 / tile.Q1;
        var valid = axis0.HasQuery(q0) && axis1.HasQuery(q1) && axis2.HasQuery(q2);
        var row = (((batch * p.Tokens) + p.Token(axis0.Coordinate(q0), axis1.Coordinate(q1), axis2.Coordinate(q2))) * p.Heads) + head;
        var window = new WindowMask(
            axis0.WindowStart(q0), axis0.WindowEnd(q0), axis1.WindowStart(q1), axis1.WindowEnd(q1), axis2.WindowStart(q2), axis2.WindowEnd(q2));

        // Q row pre-scaled by scale · log2 e: q·k is then the log2-domain score. O row starts at 0.
        var queryScale = p.Scale * Log2E;
        for (var c = 0; c < p.HeadDim; c++)
        {
            qRow[c] = valid ? TS.Load(query[(row * p.HeadDim) + c]) * queryScale : 0f;
        }

        for (var c = 0; c < p.ValueDim; c++)
        {
            oRow[c] = 0f;
        }

        var softmax = OnlineSoftmax.Empty;

        // The neighborhood: KV sub-tiles over the union of the tile's windows.
        for (var a0 = axis0.RangeStart; a0 < axis0.RangeEnd; a0 += tile.K0)
        {
            for (var a1 = axis1.RangeStart; a1 < axis1.RangeEnd; a1 += tile.K1)
            {
                for (var a2 = axis2.RangeStart; a2 < axis2.RangeEnd; a2 += tile.K2)
                {
                    Group.Barrier(); // every thread is done with the previous sub-tile
                    StageNeighborhood<T, TS>(p, tile, axis0, axis1, axis2, a0, a1, a2, batch, kvHead, key, value, kTile, vTile, tid, threads);
                    Group.Barrier();
                    if (!valid)
                    {
                        continue;
                    }

                    if (axis0.InsideEveryWindow(a0, tile.K0) && axis1.InsideEveryWindow(a1, tile.K1) && axis2.InsideEveryWindow(a2, tile.K2))
                    {
                        Accumulate(new NoMask(), a0, a1, a2, tile.K1, tile.K2, tile.KeyTile, p, qRow, kTile, vTile, oRow, ref softmax);
                    }
                    else
                    {
                        Accumulate(window, a0, a1, a2, tile.K1, tile.K2, tile.KeyTile, p, qRow, kTile, vTile, oRow, ref softmax);
                    }
                }
            }
        }

        // Additional tokens: every query sees all of them, in the same softmax.
        for (var m = 0; m < p.AdditionalTokens; m += tile.KeyTile)
        {
            Group.Barrier();
            StageAdditional<T, TS>(p, tile, m, batch, kvHead, additionalKey, additionalValue, kTile, vTile, tid, threads);
            Group.Barrier();
            if (!valid)
            {
                continue;
            }

            var count = p.AdditionalTokens - m;
            if (count >= tile.KeyTile)
            {
                Accumulate(new NoMask(), 0, 0, 0, 1, tile.KeyTile, tile.KeyTile, p, qRow, kTile, vTile, oRow, ref softmax);
            }
            else
            {
                Accumulate(new PrefixMask(count), 0, 0, 0, 1, tile.KeyTile, tile.KeyTile, p, qRow, kTile, vTile, oRow, ref softmax);
            }
        }

        if (!valid)
        {
            return;
        }

        var inverse = softmax.Sum == 0f ? 0f : 1f / softmax.Sum;
        for (var c = 0; c < p.ValueDim; c++)
        {
            output[(row * p.ValueDim) + c] = TS.Store(oRow[c] * inverse);
        }

        if (writeLse != 0)
        {
            lse[row] = softmax.LogSumExp;
        }
    }

    /// <summary>Tiles along one axis per dilation group: enough for the longest group.</summary>
    public static int TilesPerGroup(int n, int dilation, int queryTile) => ((((n + dilation - 1) / dilation) + queryTile) - 1) / queryTile;

    /// <summary>Adds every staged key the mask allows to the query's softmax and output row.</summary>
    private static void Accumulate<TMask>(
        TMask mask, int a0, int a1, int a2, int extent1, int extent2, int slots, ProblemParams p,
        ArrayView<float> qRow, ArrayView<float> kTile, ArrayView<float> vTile, ArrayView<float> oRow, ref OnlineSoftmax softmax)
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

            var score = 0f;
            var k = slot * p.HeadDim;
            for (var c = 0; c < p.HeadDim; c++)
            {
                score += qRow[c] * kTile[k + c];
            }

            softmax.Add(score, vTile.SubView(slot * p.ValueDim, p.ValueDim), oRow, p.ValueDim);
        }
    }

    /// <summary>Cooperatively copies the K and V rows of one neighborhood sub-tile into shared memory (zeros past the group's end).</summary>
    internal static void StageNeighborhood<T, TS>(
        ProblemParams p, FnaTileShape tile, TileAxis axis0, TileAxis axis1, TileAxis axis2, int a0, int a1, int a2,
        int batch, int kvHead, ArrayView<T> key, ArrayView<T> value, ArrayView<float> kTile, ArrayView<float> vTile, int tid, int threads)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        for (var e = tid; e < tile.KeyTile * p.HeadDim; e += threads)
        {
            var keyRow = TileAxis.KeyRow(p, tile, axis0, axis1, axis2, a0, a1, a2, e / p.HeadDim, batch, kvHead);
            kTile[e] = keyRow < 0 ? 0f : TS.Load(key[(keyRow * p.HeadDim) + (e % p.HeadDim)]);
        }

        for (var e = tid; e < tile.KeyTile * p.ValueDim; e += threads)
        {
            var keyRow = TileAxis.KeyRow(p, tile, axis0, axis1, axis2, a0, a1, a2, e / p.ValueDim, batch, kvHead);
            vTile[e] = keyRow < 0 ? 0f : TS.Load(value[(keyRow * p.ValueDim) + (e % p.ValueDim)]);
        }
    }

    /// <summary>Cooperatively copies additional tokens [m, m + sub-tile) into shared memory (zeros past the last token).</summary>
    internal static void StageAdditional<T, TS>(
        ProblemParams p, FnaTileShape tile, int m, int batch, int kvHead, ArrayView<T> key, ArrayView<T> value,
        ArrayView<float> kTile, ArrayView<float> vTile, int tid, int threads)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        for (var e = tid; e < tile.KeyTile * p.HeadDim; e += threads)
        {
            var token = m + (e / p.HeadDim);
            var keyRow = (((long)batch * p.AdditionalTokens) + token) * p.KvHeads + kvHead;
            kTile[e] = token < p.AdditionalTokens ? TS.Load(key[(keyRow * p.HeadDim) + (e % p.HeadDim)]) : 0f;
        }

        for (var e = tid; e < tile.KeyTile * p.ValueDim; e += threads)
        {
            var token = m + (e / p.ValueDim);
            var keyRow = (((long)batch * p.AdditionalTokens) + token) * p.KvHeads + kvHead;
            vTile[e] = token < p.AdditionalTokens ? TS.Load(value[(keyRow * p.ValueDim) + (e % p.ValueDim)]) : 0f;
        }
    }

}
