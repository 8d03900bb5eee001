using ILGPU;
using ILGPU.Algorithms;
using Natten.Kernels.Common;

namespace Natten.Kernels.BlockSparse;

/// <summary>
/// Fused block-sparse backward (FlashAttention-2 style, float32 math), deterministic: no atomics,
/// every gradient element is written by one thread that sums in a fixed order.
/// <list type="bullet">
/// <item><see cref="RowTerm{T,TS}"/>: D = rowsum(dO ∘ O), the only workspace (one float per query row).</item>
/// <item><see cref="QueryGrad{T,TS,TMask,TBias,TGrad}"/>: one group per query block (slice) as the forward, over its key-block
/// list: P = exp(s − LSE), dP = dO·v, dS = P (dP − D), dQ = scale Σ dS k; optionally dS to a bias-gradient sink
/// (<see cref="IBiasGradientSink"/>), reduced in fixed order by <see cref="BiasGradientKernels"/>.</item>
/// <item><see cref="KeyValueGrad{T,TS,TMask,TBias}"/>: one group per key block (slice) and kv head, one thread per key,
/// over the transposed list (the query blocks that list this key block) of every query head of the kv group:
/// dV = Σ P dO, dK = scale Σ dS q.</item>
/// </list>
/// </summary>
internal static class BlockSparseBackwardKernels
{
    private const float Log2E = BlockSparseForwardKernel.Log2E;

    /// <summary>D[row] = dO · O, rows grid-strided.</summary>
    public static void RowTerm<T, TS>(Index1D index, int valueDim, long count, int stride, ArrayView<T> output, ArrayView<T> outputGrad, ArrayView<float> rowTerm)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        for (long row = index.X; row < count; row += stride)
        {
            var acc = 0f;
            for (var c = 0; c < valueDim; c++)
            {
                acc += TS.Load(output[(row * valueDim) + c]) * TS.Load(outputGrad[(row * valueDim) + c]);
            }

            rowTerm[row] = acc;
        }
    }

    /// <summary>dQ per query (slice of a) block; with a bias-gradient sink other than <see cref="NoBiasGradient"/>, also hands each pair's dS to it.</summary>
    public static void QueryGrad<T, TS, TMask, TBias, TGrad>(
        BlockSparseParams p, BlockSparseTiles tiles, BlockList blocks, TMask mask, TBias bias,
        ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<float> lse, ArrayView<float> rowTerm,
        ArrayView<T> outputGrad, ArrayView<T> queryGrad, TGrad biasGrad)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
        where TGrad : struct, IBiasGradientSink
    {
        var groupsPerBlock = tiles.QueryGroupsPerBlock(p.QueryBlock);
        var queryBlock = Grid.IdxX / groupsPerBlock;
        var blockStart = queryBlock * p.QueryBlock;
        var first = blockStart + (Grid.IdxX % groupsPerBlock * tiles.Queries);
        var end = BlockSparseForwardKernel.Min(BlockSparseForwardKernel.Min(blockStart + p.QueryBlock, p.QueryTokens), first + tiles.Queries);
        if (first >= end)
        {
            return;
        }

        var head = Grid.IdxY;
        var batch = Grid.IdxZ;
        var kvHead = p.KvHeadOf(head);
        var tid = Group.IdxX;
        var threads = Group.DimX;
        var queryToken = first + tid;
        var valid = queryToken < end;
        var row = ((((long)batch * p.QueryTokens) + queryToken) * p.Heads) + head;

        var qStride = p.HeadDim + 1;
        var oStride = p.ValueDim + 1;
        var shared = SharedMemory.GetDynamic<float>();
        var offset = 0;
        var qTile = BlockSparseForwardKernel.Take(shared, ref offset, tiles.Queries * qStride);
        var dqTile = BlockSparseForwardKernel.Take(shared, ref offset, tiles.Queries * qStride);
        var doTile = BlockSparseForwardKernel.Take(shared, ref offset, tiles.Queries * oStride);
        var kTile = BlockSparseForwardKernel.Take(shared, ref offset, tiles.Keys * p.HeadDim);
        var vTile = BlockSparseForwardKernel.Take(shared, ref offset, tiles.Keys * p.ValueDim);
        var qRow = qTile.SubView(tid * qStride, p.HeadDim);
        var dqRow = dqTile.SubView(tid * qStride, p.HeadDim);
        var doRow = doTile.SubView(tid * oStride, p.ValueDim);

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
        var listRow = p.ForwardRow(batch, head, queryBlock);
        var listEnd = blocks.Offsets[listRow + 1];
        for (var e = blocks.Offsets[listRow]; e < listEnd; e++)
        {
            var entry = blocks.Entries[e];
            var keyStart = BlockList.Block(entry) * p.KeyBlock;
            var keyEnd = BlockSparseForwardKernel.Min(keyStart + p.KeyBlock, p.KeyTokens);
            for (var s = keyStart; s < keyEnd; s += tiles.Keys)
            {
                var count = BlockSparseForwardKernel.Min(tiles.Keys, keyEnd - s);
                Group.Barrier();
                BlockSparseForwardKernel.StageKeys<T, TS>(p, tiles, s, count, batch, kvHead, key, value, kTile, vTile, tid, threads);
                Group.Barrier();
                if (!valid)
                {
                    continue;
                }

                if (BlockList.IsPartial(entry))
                {
                    AccumulateQueryGrad(mask, bias, biasGrad, batch, head, queryToken, s, count, e, row, p, qRow, doRow, dqRow, kTile, vTile, lse2, term);
                }
                else
                {
                    AccumulateQueryGrad(default(AllowAll), bias, biasGrad, batch, head, queryToken, s, count, e, row, p, qRow, doRow, dqRow, kTile, vTile, lse2, term);
                }
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

    public static void KeyValueGrad<T, TS, TMask, TBias>(
        BlockSparseParams p, BlockSparseTiles tiles, BlockList transposed, TMask mask, TBias bias,
        ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<float> lse, ArrayView<float> rowTerm,
        ArrayView<T> outputGrad, ArrayView<T> keyGrad, ArrayView<T> valueGrad)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        var groupsPerBlock = tiles.KeyGroupsPerBlock(p.KeyBlock);
        var keyBlock = Grid.IdxX / groupsPerBlock;
        var blockStart = keyBlock * p.KeyBlock;
        var first = blockStart + (Grid.IdxX % groupsPerBlock * tiles.KeyThreads);
        var end = BlockSparseForwardKernel.Min(BlockSparseForwardKernel.Min(blockStart + p.KeyBlock, p.KeyTokens), first + tiles.KeyThreads);
        if (first >= end)
        {
            return;
        }

        var kvHead = Grid.IdxY;
        var batch = Grid.IdxZ;
        var group = p.Heads / p.KvHeads;
        var tid = Group.IdxX;
        var threads = Group.DimX;
        var keyToken = first + tid;
        var valid = keyToken < end;
        var keyRow = ((((long)batch * p.KeyTokens) + keyToken) * p.KvHeads) + kvHead;

        var kStride = p.HeadDim + 1;
        var vStride = p.ValueDim + 1;
        var shared = SharedMemory.GetDynamic<float>();
        var offset = 0;
        var kTile = BlockSparseForwardKernel.Take(shared, ref offset, tiles.KeyThreads * kStride);
        var dkTile = BlockSparseForwardKernel.Take(shared, ref offset, tiles.KeyThreads * kStride);
        var vTile = BlockSparseForwardKernel.Take(shared, ref offset, tiles.KeyThreads * vStride);
        var dvTile = BlockSparseForwardKernel.Take(shared, ref offset, tiles.KeyThreads * vStride);
        var qSub = BlockSparseForwardKernel.Take(shared, ref offset, tiles.StagedQueries * p.HeadDim);
        var doSub = BlockSparseForwardKernel.Take(shared, ref offset, tiles.StagedQueries * p.ValueDim);
        var lseSub = BlockSparseForwardKernel.Take(shared, ref offset, tiles.StagedQueries);
        var termSub = BlockSparseForwardKernel.Take(shared, ref offset, tiles.StagedQueries);
        var kRow = kTile.SubView(tid * kStride, p.HeadDim);
        var dkRow = dkTile.SubView(tid * kStride, p.HeadDim);
        var vRow = vTile.SubView(tid * vStride, p.ValueDim);
        var dvRow = dvTile.SubView(tid * vStride, p.ValueDim);

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

        for (var head = kvHead * group; head < (kvHead + 1) * group; head++)
        {
            var listRow = p.TransposedRow(batch, head, keyBlock);
            var listEnd = transposed.Offsets[listRow + 1];
            for (var e = transposed.Offsets[listRow]; e < listEnd; e++)
            {
                var entry = transposed.Entries[e];
                var queryStart = BlockList.Block(entry) * p.QueryBlock;
                var queryEnd = BlockSparseForwardKernel.Min(queryStart + p.QueryBlock, p.QueryTokens);
                for (var s = queryStart; s < queryEnd; s += tiles.StagedQueries)
                {
                    var count = BlockSparseForwardKernel.Min(tiles.StagedQueries, queryEnd - s);
                    Group.Barrier();
                    StageQueries<T, TS>(p, tiles, s, count, batch, head, query, outputGrad, lse, rowTerm, qSub, doSub, lseSub, termSub, tid, threads);
                    Group.Barrier();
                    if (!valid)
                    {
                        continue;
                    }

                    if (BlockList.IsPartial(entry))
                    {
                        AccumulateKeyValueGrad(mask, bias, batch, head, keyToken, s, count, p, qSub, doSub, lseSub, termSub, kRow, vRow, dkRow, dvRow);
                    }
                    else
                    {
                        AccumulateKeyValueGrad(default(AllowAll), bias, batch, head, keyToken, s, count, p, qSub, doSub, lseSub, termSub, kRow, vRow, dkRow, dvRow);
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

    /// <summary>dQ += Σ dS · k over the staged keys the mask allows (unscaled: the caller multiplies by scale); dS also to the bias-gradient sink.</summary>
    private static void AccumulateQueryGrad<TMask, TBias, TGrad>(
        TMask mask, TBias bias, TGrad biasGrad, int batch, int head, int queryToken, int firstKey, int count, int entry, long row, BlockSparseParams p,
        ArrayView<float> qRow, ArrayView<float> doRow, ArrayView<float> dqRow, ArrayView<float> kTile, ArrayView<float> vTile, float lse2, float term)
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
        where TGrad : struct, IBiasGradientSink
    {
        for (var slot = 0; slot < count; slot++)
        {
            var keyToken = firstKey + slot;
            if (!mask.Allows(batch, head, queryToken, keyToken))
            {
                continue;
            }

            var k = slot * p.HeadDim;
            var score = bias.Bias(batch, head, queryToken, keyToken) * Log2E;
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
            biasGrad.Add(bias, batch, head, queryToken, keyToken, entry, row, ds);
            for (var c = 0; c < p.HeadDim; c++)
            {
                dqRow[c] += ds * kTile[k + c];
            }
        }
    }

    /// <summary>dV += P · dO and dK += dS · q (unscaled) over the staged queries that see this key.</summary>
    private static void AccumulateKeyValueGrad<TMask, TBias>(
        TMask mask, TBias bias, int batch, int head, int keyToken, int firstQuery, int count, BlockSparseParams p,
        ArrayView<float> qSub, ArrayView<float> doSub, ArrayView<float> lseSub, ArrayView<float> termSub,
        ArrayView<float> kRow, ArrayView<float> vRow, ArrayView<float> dkRow, ArrayView<float> dvRow)
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        for (var slot = 0; slot < count; slot++)
        {
            var queryToken = firstQuery + slot;
            if (!mask.Allows(batch, head, queryToken, keyToken))
            {
                continue;
            }

            var q = slot * p.HeadDim;
            var score = bias.Bias(batch, head, queryToken, keyToken) * Log2E;
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
    }

    /// <summary>Stages the Q and dO rows, LSE (log2 domain) and D of queries [first, first + count) of head <paramref name="head"/>.</summary>
    private static void StageQueries<T, TS>(
        BlockSparseParams p, BlockSparseTiles tiles, int first, int count, int batch, int head,
        ArrayView<T> query, ArrayView<T> outputGrad, ArrayView<float> lse, ArrayView<float> rowTerm,
        ArrayView<float> qSub, ArrayView<float> doSub, ArrayView<float> lseSub, ArrayView<float> termSub, int tid, int threads)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        for (var e = tid; e < tiles.StagedQueries * p.HeadDim; e += threads)
        {
            var slot = e / p.HeadDim;
            var row = ((((long)batch * p.QueryTokens) + first + slot) * p.Heads) + head;
            qSub[e] = slot < count ? TS.Load(query[(row * p.HeadDim) + (e % p.HeadDim)]) : 0f;
        }

        for (var e = tid; e < tiles.StagedQueries * p.ValueDim; e += threads)
        {
            var slot = e / p.ValueDim;
            var row = ((((long)batch * p.QueryTokens) + first + slot) * p.Heads) + head;
            doSub[e] = slot < count ? TS.Load(outputGrad[(row * p.ValueDim) + (e % p.ValueDim)]) : 0f;
        }

        for (var slot = tid; slot < tiles.StagedQueries; slot += threads)
        {
            var row = ((((long)batch * p.QueryTokens) + first + slot) * p.Heads) + head;
            lseSub[slot] = slot < count ? lse[row] * Log2E : 0f;
            termSub[slot] = slot < count ? rowTerm[row] : 0f;
        }
    }
}
