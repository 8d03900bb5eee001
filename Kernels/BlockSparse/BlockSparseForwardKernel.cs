using ILGPU;
using Natten.Kernels.Common;
using Natten.Kernels.Fused;

namespace Natten.Kernels.BlockSparse;

/// <summary>
/// Fused block-sparse attention forward, float32 math (FlashAttention-2 style, like the FNA forward):
/// one group per (query block, head, batch) — or per slice of <see cref="BlockSparseTiles.Queries"/>
/// queries of a larger block — one thread per query. The group walks only the key blocks its list
/// names, staging each in sub-tiles of <see cref="BlockSparseTiles.Keys"/> keys in shared memory; full
/// blocks run without a mask, partial blocks with the pattern's mask struct (<see cref="IElementMask"/>). The softmax
/// is online (<see cref="OnlineSoftmax"/>, log2 domain); output and LSE are written once.
/// </summary>
/// <remarks>
/// Every loop bound that surrounds a barrier depends only on the group's indices, so barriers never
/// diverge. Queries past the sequence's end still stage their share and skip the arithmetic.
/// </remarks>
internal static class BlockSparseForwardKernel
{
    internal const float Log2E = 1.4426950408889634f;

    public static void Forward<T, TS, TMask, TBias>(
        BlockSparseParams p, BlockSparseTiles tiles, BlockList blocks, TMask mask, TBias bias,
        ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<T> output, ArrayView<float> lse, int writeLse)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        var groupsPerBlock = tiles.QueryGroupsPerBlock(p.QueryBlock);
        var queryBlock = Grid.IdxX / groupsPerBlock;
        var blockStart = queryBlock * p.QueryBlock;
        var first = blockStart + (Grid.IdxX % groupsPerBlock * tiles.Queries);
        var end = Min(Min(blockStart + p.QueryBlock, p.QueryTokens), first + tiles.Queries);
        if (first >= end)
        {
            return; // the whole group leaves: a short last block has fewer slices
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
        var qTile = Take(shared, ref offset, tiles.Queries * qStride);
        var oTile = Take(shared, ref offset, tiles.Queries * oStride);
        var kTile = Take(shared, ref offset, tiles.Keys * p.HeadDim);
        var vTile = Take(shared, ref offset, tiles.Keys * p.ValueDim);
        var qRow = qTile.SubView(tid * qStride, p.HeadDim);
        var oRow = oTile.SubView(tid * oStride, p.ValueDim);

        // Q pre-scaled by scale · log2 e: q·k is then the log2-domain score. O starts at 0.
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
        var listRow = p.ForwardRow(batch, head, queryBlock);
        var listEnd = blocks.Offsets[listRow + 1];
        for (var e = blocks.Offsets[listRow]; e < listEnd; e++)
        {
            var entry = blocks.Entries[e];
            var keyStart = BlockList.Block(entry) * p.KeyBlock;
            var keyEnd = Min(keyStart + p.KeyBlock, p.KeyTokens);
            for (var s = keyStart; s < keyEnd; s += tiles.Keys)
            {
                var count = Min(tiles.Keys, keyEnd - s);
                Group.Barrier(); // every thread is done with the previous sub-tile
                StageKeys<T, TS>(p, tiles, s, count, batch, kvHead, key, value, kTile, vTile, tid, threads);
                Group.Barrier();
                if (!valid)
                {
                    continue;
                }

                if (BlockList.IsPartial(entry))
                {
                    Accumulate(mask, bias, batch, head, queryToken, s, count, p, qRow, kTile, vTile, oRow, ref softmax);
                }
                else
                {
                    Accumulate(default(AllowAll), bias, batch, head, queryToken, s, count, p, qRow, kTile, vTile, oRow, ref softmax);
                }
            }
        }

        if (!valid)
        {
            return;
        }

        // A query that saw no key keeps Sum = 0: output 0, LSE −∞ (OnlineSoftmax.LogSumExp).
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

    /// <summary>Cooperatively copies the K and V rows of keys [first, first + count) into shared memory (zeros after them).</summary>
    internal static void StageKeys<T, TS>(
        BlockSparseParams p, BlockSparseTiles tiles, int first, int count, int batch, int kvHead,
        ArrayView<T> key, ArrayView<T> value, ArrayView<float> kTile, ArrayView<float> vTile, int tid, int threads)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        for (var e = tid; e < tiles.Keys * p.HeadDim; e += threads)
        {
            var slot = e / p.HeadDim;
            var keyRow = ((((long)batch * p.KeyTokens) + first + slot) * p.KvHeads) + kvHead;
            kTile[e] = slot < count ? TS.Load(key[(keyRow * p.HeadDim) + (e % p.HeadDim)]) : 0f;
        }

        for (var e = tid; e < tiles.Keys * p.ValueDim; e += threads)
        {
            var slot = e / p.ValueDim;
            var keyRow = ((((long)batch * p.KeyTokens) + first + slot) * p.KvHeads) + kvHead;
            vTile[e] = slot < count ? TS.Load(value[(keyRow * p.ValueDim) + (e % p.ValueDim)]) : 0f;
        }
    }

    internal static int Min(int a, int b) => a < b ? a : b;

    internal static ArrayView<float> Take(ArrayView<float> shared, ref int offset, int length)
    {
        var view = shared.SubView(offset, length);
        offset += length;
        return view;
    }

    /// <summary>Adds every staged key the mask allows to the query's softmax and output row.</summary>
    private static void Accumulate<TMask, TBias>(
        TMask mask, TBias bias, int batch, int head, int queryToken, int firstKey, int count, BlockSparseParams p,
        ArrayView<float> qRow, ArrayView<float> kTile, ArrayView<float> vTile, ArrayView<float> oRow, ref OnlineSoftmax softmax)
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        for (var slot = 0; slot < count; slot++)
        {
            var keyToken = firstKey + slot;
            if (!mask.Allows(batch, head, queryToken, keyToken))
            {
                continue;
            }

            var score = bias.Bias(batch, head, queryToken, keyToken) * Log2E;
            var k = slot * p.HeadDim;
            for (var c = 0; c < p.HeadDim; c++)
            {
                score += qRow[c] * kTile[k + c];
            }

            softmax.Add(score, vTile.SubView(slot * p.ValueDim, p.ValueDim), oRow, p.ValueDim);
        }
    }
}
