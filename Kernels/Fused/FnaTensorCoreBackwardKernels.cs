using ILGPU;
using ILGPU.Algorithms;
using Natten.Kernels.Common;
using Natten.Kernels.Cuda;

namespace Natten.Kernels.Fused;

/// <summary>
/// The fused backward on tensor cores (fp16/bf16 operands, f32 accumulation), with the same tiling,
/// masks and determinism as <see cref="FnaBackwardKernels"/>: no atomics, one writer per element.
/// <list type="bullet">
/// <item><see cref="QueryGrad{TFormat}"/>: per query tile, a warp per 16 rows: S = Q·Kᵀ and dP = dO·Vᵀ on tensor
/// cores, P = exp(S − LSE) and dS = P (dP − D) a lane per row (dS rounded to the input format), dQ += dS·K.</item>
/// <item><see cref="KeyValueGrad{TFormat}"/>: per key tile and kv head, a warp per 16 keys, over the inverse
/// neighborhood in query sub-tiles and every query head of the group: Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, Pᵀ and dSᵀ a lane
/// per key row, dV += Pᵀ·dO, dK += dSᵀ·Q.</item>
/// </list>
/// The row term D and the additional tokens' key/value gradients come from <see cref="FnaBackwardKernels"/>.
/// Static shared memory holds the two float score tiles, per-row statistics and the mma emulation's scratch;
/// per-lane gradient accumulators live in a local array (version 1, as the forward).
/// </summary>
internal static class FnaTensorCoreBackwardKernels
{
    public const int MaxScores = 64 * 32;
    public const int MaxDims = 256;
    private const float Log2E = 1.4426950408889634f;

    public static void QueryGrad<TFormat>(
        ProblemParams p, FnaTileShape tile, ArrayView<ushort> query, ArrayView<ushort> key, ArrayView<ushort> value,
        ArrayView<ushort> additionalKey, ArrayView<ushort> additionalValue, ArrayView<float> lse, ArrayView<float> rowTerm,
        ArrayView<ushort> outputGrad, ArrayView<ushort> queryGrad)
        where TFormat : struct, IHalfFormat
    {
        var scores = SharedMemory.Allocate<float>(MaxScores);
        var scoreGrads = SharedMemory.Allocate<float>(MaxScores);
        var rowLse = SharedMemory.Allocate<float>(16 * FnaTensorCoreKernel.MaxWarps);
        var rowD = SharedMemory.Allocate<float>(16 * FnaTensorCoreKernel.MaxWarps);
        var scratchAll = SharedMemory.Allocate<uint>(TensorCore.ScratchWordsPerWarp * FnaTensorCoreKernel.MaxWarps);
        var accumulators = LocalMemory.Allocate<float>(MaxDims / 2);

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
        var warp = tid / 32;
        var lane = tid % 32;
        var g = lane / 4;
        var t = lane % 4;
        var scratch = scratchAll.SubView(warp * TensorCore.ScratchWordsPerWarp, TensorCore.ScratchWordsPerWarp);
        var keys = tile.KeyTile;
        var shared = SharedMemory.GetDynamic<ushort>();
        var offset = 0;
        var qTile = Take(shared, ref offset, tile.QueryTile * p.HeadDim);
        var doTile = Take(shared, ref offset, tile.QueryTile * p.ValueDim);
        var kTile = Take(shared, ref offset, keys * p.HeadDim);
        var vTile = Take(shared, ref offset, keys * p.ValueDim);
        var dsTile = Take(shared, ref offset, tile.QueryTile * keys);

        for (var e = tid; e < tile.QueryTile * p.HeadDim; e += threads)
        {
            var row = TileAxis.QueryRow(p, tile, axis0, axis1, axis2, e / p.HeadDim, batch, head);
            qTile[e] = row < 0 ? (ushort)0 : query[(row * p.HeadDim) + (e % p.HeadDim)];
        }

        for (var e = tid; e < tile.QueryTile * p.ValueDim; e += threads)
        {
            var row = TileAxis.QueryRow(p, tile, axis0, axis1, axis2, e / p.ValueDim, batch, head);
            doTile[e] = row < 0 ? (ushort)0 : outputGrad[(row * p.ValueDim) + (e % p.ValueDim)];
        }

        for (var r = tid; r < tile.QueryTile; r += threads)
        {
            var row = TileAxis.QueryRow(p, tile, axis0, axis1, axis2, r, batch, head);
            rowLse[r] = row < 0 ? 0f : lse[row] * Log2E;
            rowD[r] = row < 0 ? 0f : rowTerm[row];
        }

        for (var i = 0; i < p.HeadDim / 2; i++)
        {
            accumulators[i] = 0f;
        }

        var scoreScale = p.Scale * Log2E;
        for (var a0 = axis0.RangeStart; a0 < axis0.RangeEnd; a0 += tile.K0)
        {
            for (var a1 = axis1.RangeStart; a1 < axis1.RangeEnd; a1 += tile.K1)
            {
                for (var a2 = axis2.RangeStart; a2 < axis2.RangeEnd; a2 += tile.K2)
                {
                    Group.Barrier();
                    FnaTensorCoreKernel.StageNeighborhood(p, tile, axis0, axis1, axis2, a0, a1, a2, batch, kvHead, key, value, kTile, vTile, tid, threads);
                    Group.Barrier();
                    ScoresAndGrads<TFormat>(p, warp, g, t, keys, qTile, doTile, kTile, vTile, scores, scoreGrads, scoreScale, scratch);
                    Group.Barrier();
                    if (lane < 16)
                    {
                        var local = (warp * 16) + lane;
                        var q2 = local % tile.Q2;
                        var q1 = local / tile.Q2 % tile.Q1;
                        var q0 = local / tile.Q2 / tile.Q1;
                        var valid = axis0.HasQuery(q0) && axis1.HasQuery(q1) && axis2.HasQuery(q2);
                        if (axis0.InsideEveryWindow(a0, tile.K0) && axis1.InsideEveryWindow(a1, tile.K1) && axis2.InsideEveryWindow(a2, tile.K2))
                        {
                            ScoreGradRow<TFormat, NoMask>(new NoMask(), valid, local, a0, a1, a2, tile.K1, tile.K2, keys, scores, scoreGrads, rowLse, rowD, dsTile);
                        }
                        else
                        {
                            var window = new WindowMask(
                                axis0.WindowStart(q0), axis0.WindowEnd(q0), axis1.WindowStart(q1), axis1.WindowEnd(q1), axis2.WindowStart(q2), axis2.WindowEnd(q2));
                            ScoreGradRow<TFormat, WindowMask>(window, valid, local, a0, a1, a2, tile.K1, tile.K2, keys, scores, scoreGrads, rowLse, rowD, dsTile);
                        }
                    }

                    Group.Barrier();
                    Accumulate<TFormat>(dsTile, keys, warp * 16, kTile, p.HeadDim, g, t, accumulators, 0, scratch);
                }
            }
        }

        for (var m = 0; m < p.AdditionalTokens; m += keys)
        {
            Group.Barrier();
            FnaTensorCoreKernel.StageAdditional(p, keys, m, batch, kvHead, additionalKey, additionalValue, kTile, vTile, tid, threads);
            Group.Barrier();
            ScoresAndGrads<TFormat>(p, warp, g, t, keys, qTile, doTile, kTile, vTile, scores, scoreGrads, scoreScale, scratch);
            Group.Barrier();
            if (lane < 16)
            {
                var local = (warp * 16) + lane;
                var valid = axis0.HasQuery(local / tile.Q2 / tile.Q1) && axis1.HasQuery(local / tile.Q2 % tile.Q1) && axis2.HasQuery(local % tile.Q2);
                ScoreGradRow<TFormat, PrefixMask>(
                    new PrefixMask(p.AdditionalTokens - m), valid, local, 0, 0, 0, 1, keys, keys, scores, scoreGrads, rowLse, rowD, dsTile);
            }

            Group.Barrier();
            Accumulate<TFormat>(dsTile, keys, warp * 16, kTile, p.HeadDim, g, t, accumulators, 0, scratch);
        }

        StoreRows<TFormat>(p, tile, axis0, axis1, axis2, batch, head, warp, g, t, p.HeadDim, p.Scale, accumulators, 0, queryGrad);
    }

    public static void KeyValueGrad<TFormat>(
        ProblemParams p, FnaTileShape tile, ArrayView<ushort> query, ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<float> lse,
        ArrayView<float> rowTerm, ArrayView<ushort> outputGrad, ArrayView<ushort> keyGrad, ArrayView<ushort> valueGrad)
        where TFormat : struct, IHalfFormat
    {
        var scores = SharedMemory.Allocate<float>(MaxScores);
        var scoreGrads = SharedMemory.Allocate<float>(MaxScores);
        var queryLse = SharedMemory.Allocate<float>(MaxScores / 16);
        var queryD = SharedMemory.Allocate<float>(MaxScores / 16);
        var scratchAll = SharedMemory.Allocate<uint>(TensorCore.ScratchWordsPerWarp * FnaTensorCoreKernel.MaxWarps);
        var accumulators = LocalMemory.Allocate<float>(MaxDims);

        // Roles swap as in the float32 kernel: the group's tile holds keys (tile.Q*), sub-tiles hold queries (tile.K*).
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
        var warp = tid / 32;
        var lane = tid % 32;
        var g = lane / 4;
        var t = lane % 4;
        var scratch = scratchAll.SubView(warp * TensorCore.ScratchWordsPerWarp, TensorCore.ScratchWordsPerWarp);
        var queries = tile.KeyTile;
        var shared = SharedMemory.GetDynamic<ushort>();
        var offset = 0;
        var kTile = Take(shared, ref offset, tile.QueryTile * p.HeadDim);
        var vTile = Take(shared, ref offset, tile.QueryTile * p.ValueDim);
        var qSub = Take(shared, ref offset, queries * p.HeadDim);
        var doSub = Take(shared, ref offset, queries * p.ValueDim);
        var pTile = Take(shared, ref offset, tile.QueryTile * queries);
        var dsTile = Take(shared, ref offset, tile.QueryTile * queries);

        for (var e = tid; e < tile.QueryTile * p.HeadDim; e += threads)
        {
            var row = InverseTileAxis.KeyRow(p, tile, axis0, axis1, axis2, e / p.HeadDim, batch, kvHead);
            kTile[e] = row < 0 ? (ushort)0 : key[(row * p.HeadDim) + (e % p.HeadDim)];
        }

        for (var e = tid; e < tile.QueryTile * p.ValueDim; e += threads)
        {
            var row = InverseTileAxis.KeyRow(p, tile, axis0, axis1, axis2, e / p.ValueDim, batch, kvHead);
            vTile[e] = row < 0 ? (ushort)0 : value[(row * p.ValueDim) + (e % p.ValueDim)];
        }

        for (var i = 0; i < (p.HeadDim + p.ValueDim) / 2; i++)
        {
            accumulators[i] = 0f;
        }

        var scoreScale = p.Scale * Log2E;
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
                        StageQueries(p, tile, axis0, axis1, axis2, a0, a1, a2, batch, h, query, outputGrad, lse, rowTerm, qSub, doSub, queryLse, queryD, tid, threads);
                        Group.Barrier();

                        // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ for this warp's 16 keys and every staged query.
                        for (var n = 0; n < queries / 8; n++)
                        {
                            float c0 = 0f, c1 = 0f, c2 = 0f, c3 = 0f;
                            WarpProducts.ProductNT<TFormat>(kTile, p.HeadDim, warp * 16, qSub, p.HeadDim, n * 8, p.HeadDim, g, t, ref c0, ref c1, ref c2, ref c3, scratch);
                            WarpProducts.Store(scores, queries, warp * 16, n * 8, g, t, scoreScale, c0, c1, c2, c3);
                            c0 = c1 = c2 = c3 = 0f;
                            WarpProducts.ProductNT<TFormat>(vTile, p.ValueDim, warp * 16, doSub, p.ValueDim, n * 8, p.ValueDim, g, t, ref c0, ref c1, ref c2, ref c3, scratch);
                            WarpProducts.Store(scoreGrads, queries, warp * 16, n * 8, g, t, 1f, c0, c1, c2, c3);
                        }

                        Group.Barrier();
                        if (lane < 16)
                        {
                            var local = (warp * 16) + lane;
                            var k2 = local % tile.Q2;
                            var k1 = local / tile.Q2 % tile.Q1;
                            var k0 = local / tile.Q2 / tile.Q1;
                            var validKey = axis0.HasKey(k0) && axis1.HasKey(k1) && axis2.HasKey(k2);
                            for (var slot = 0; slot < queries; slot++)
                            {
                                var i2 = a2 + (slot % tile.K2);
                                var i1 = a1 + (slot / tile.K2 % tile.K1);
                                var i0 = a0 + (slot / tile.K2 / tile.K1);
                                var sees = validKey && (inside || (i0 < axis0.RangeEnd && i1 < axis1.RangeEnd && i2 < axis2.RangeEnd
                                    && axis0.Sees(i0, axis0.First + k0) && axis1.Sees(i1, axis1.First + k1) && axis2.Sees(i2, axis2.First + k2)));
                                var at = (local * queries) + slot;
                                var prob = sees ? XMath.Exp2(scores[at] - queryLse[slot]) : 0f;
                                pTile[at] = TFormat.FromFloat(prob);
                                dsTile[at] = TFormat.FromFloat(prob * (scoreGrads[at] - queryD[slot]));
                            }
                        }

                        Group.Barrier();
                        Accumulate<TFormat>(pTile, queries, warp * 16, doSub, p.ValueDim, g, t, accumulators, p.HeadDim / 2, scratch);
                        Accumulate<TFormat>(dsTile, queries, warp * 16, qSub, p.HeadDim, g, t, accumulators, 0, scratch);
                    }
                }
            }
        }

        // Lane (g, t) holds key rows g, g + 8 of its warp.
        for (var half = 0; half < 2; half++)
        {
            var local = (warp * 16) + g + (8 * half);
            var row = InverseTileAxis.KeyRow(p, tile, axis0, axis1, axis2, local, batch, kvHead);
            if (row < 0)
            {
                continue;
            }

            for (var n = 0; n < p.HeadDim / 8; n++)
            {
                for (var j = 0; j < 2; j++)
                {
                    keyGrad[(row * p.HeadDim) + (n * 8) + (2 * t) + j] = TFormat.FromFloat(accumulators[(n * 4) + (2 * half) + j] * p.Scale);
                }
            }

            for (var n = 0; n < p.ValueDim / 8; n++)
            {
                for (var j = 0; j < 2; j++)
                {
                    valueGrad[(row * p.ValueDim) + (n * 8) + (2 * t) + j] = TFormat.FromFloat(accumulators[(p.HeadDim / 2) + (n * 4) + (2 * half) + j]);
                }
            }
        }
    }

    /// <summary>S (log2 domain) and dP = dO·Vᵀ for this warp's 16 query rows and every staged key.</summary>
    private static void ScoresAndGrads<TFormat>(
        ProblemParams p, int warp, int g, int t, int keys, ArrayView<ushort> qTile, ArrayView<ushort> doTile, ArrayView<ushort> kTile,
        ArrayView<ushort> vTile, ArrayView<float> scores, ArrayView<float> scoreGrads, float scoreScale, ArrayView<uint> scratch)
        where TFormat : struct, IHalfFormat
    {
        for (var n = 0; n < keys / 8; n++)
        {
            float c0 = 0f, c1 = 0f, c2 = 0f, c3 = 0f;
            WarpProducts.ProductNT<TFormat>(qTile, p.HeadDim, warp * 16, kTile, p.HeadDim, n * 8, p.HeadDim, g, t, ref c0, ref c1, ref c2, ref c3, scratch);
            WarpProducts.Store(scores, keys, warp * 16, n * 8, g, t, scoreScale, c0, c1, c2, c3);
            c0 = c1 = c2 = c3 = 0f;
            WarpProducts.ProductNT<TFormat>(doTile, p.ValueDim, warp * 16, vTile, p.ValueDim, n * 8, p.ValueDim, g, t, ref c0, ref c1, ref c2, ref c3, scratch);
            WarpProducts.Store(scoreGrads, keys, warp * 16, n * 8, g, t, 1f, c0, c1, c2, c3);
        }
    }

    /// <summary>dS = P (dP − D) for one query row, P = exp2(S − LSE) where the mask allows, rounded into <paramref name="dsTile"/>.</summary>
    private static void ScoreGradRow<TFormat, TMask>(
        TMask mask, bool valid, int local, int a0, int a1, int a2, int extent1, int extent2, int keys,
        ArrayView<float> scores, ArrayView<float> scoreGrads, ArrayView<float> rowLse, ArrayView<float> rowD, ArrayView<ushort> dsTile)
        where TFormat : struct, IHalfFormat
        where TMask : struct, IKeyMask
    {
        for (var slot = 0; slot < keys; slot++)
        {
            var at = (local * keys) + slot;
            var allowed = valid && mask.Allows(a0 + (slot / extent2 / extent1), a1 + (slot / extent2 % extent1), a2 + (slot % extent2));
            var prob = allowed ? XMath.Exp2(scores[at] - rowLse[local]) : 0f;
            dsTile[at] = TFormat.FromFloat(prob * (scoreGrads[at] - rowD[local]));
        }
    }

    /// <summary>acc[offset…] += A(warp rows) · B over <paramref name="kLength"/>, B row-major [k × width]; the tile's n-tiles over B's width.</summary>
    private static void Accumulate<TFormat>(
        ArrayView<ushort> a, int kLength, int row0, ArrayView<ushort> b, int width, int g, int t, ArrayView<float> accumulators, int offset,
        ArrayView<uint> scratch)
        where TFormat : struct, IHalfFormat
    {
        for (var n = 0; n < width / 8; n++)
        {
            var at = offset + (n * 4);
            var c0 = accumulators[at];
            var c1 = accumulators[at + 1];
            var c2 = accumulators[at + 2];
            var c3 = accumulators[at + 3];
            WarpProducts.ProductNN<TFormat>(a, kLength, row0, b, width, n * 8, kLength, g, t, ref c0, ref c1, ref c2, ref c3, scratch);
            accumulators[at] = c0;
            accumulators[at + 1] = c1;
            accumulators[at + 2] = c2;
            accumulators[at + 3] = c3;
        }
    }

    private static void StoreRows<TFormat>(
        ProblemParams p, FnaTileShape tile, TileAxis axis0, TileAxis axis1, TileAxis axis2, int batch, int head, int warp, int g, int t,
        int width, float scale, ArrayView<float> accumulators, int offset, ArrayView<ushort> target)
        where TFormat : struct, IHalfFormat
    {
        for (var half = 0; half < 2; half++)
        {
            var row = TileAxis.QueryRow(p, tile, axis0, axis1, axis2, (warp * 16) + g + (8 * half), batch, head);
            if (row < 0)
            {
                continue;
            }

            for (var n = 0; n < width / 8; n++)
            {
                for (var j = 0; j < 2; j++)
                {
                    target[(row * width) + (n * 8) + (2 * t) + j] = TFormat.FromFloat(accumulators[offset + (n * 4) + (2 * half) + j] * scale);
                }
            }
        }
    }

    private static void StageQueries(
        ProblemParams p, FnaTileShape tile, InverseTileAxis axis0, InverseTileAxis axis1, InverseTileAxis axis2, int a0, int a1, int a2,
        int batch, int head, ArrayView<ushort> query, ArrayView<ushort> outputGrad, ArrayView<float> lse, ArrayView<float> rowTerm,
        ArrayView<ushort> qSub, ArrayView<ushort> doSub, ArrayView<float> queryLse, ArrayView<float> queryD, int tid, int threads)
    {
        for (var e = tid; e < tile.KeyTile * p.HeadDim; e += threads)
        {
            var row = InverseTileAxis.QueryRow(p, tile, axis0, axis1, axis2, a0, a1, a2, e / p.HeadDim, batch, head);
            qSub[e] = row < 0 ? (ushort)0 : query[(row * p.HeadDim) + (e % p.HeadDim)];
        }

        for (var e = tid; e < tile.KeyTile * p.ValueDim; e += threads)
        {
            var row = InverseTileAxis.QueryRow(p, tile, axis0, axis1, axis2, a0, a1, a2, e / p.ValueDim, batch, head);
            doSub[e] = row < 0 ? (ushort)0 : outputGrad[(row * p.ValueDim) + (e % p.ValueDim)];
        }

        for (var slot = tid; slot < tile.KeyTile; slot += threads)
        {
            var row = InverseTileAxis.QueryRow(p, tile, axis0, axis1, axis2, a0, a1, a2, slot, batch, head);
            queryLse[slot] = row < 0 ? 0f : lse[row] * Log2E;
            queryD[slot] = row < 0 ? 0f : rowTerm[row];
        }
    }

    private static ArrayView<ushort> Take(ArrayView<ushort> shared, ref int offset, int length)
    {
        var view = shared.SubView(offset, length);
        offset += length;
        return view;
    }
}
