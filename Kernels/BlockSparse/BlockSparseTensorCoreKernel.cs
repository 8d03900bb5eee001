using ILGPU;
using ILGPU.Algorithms;
using Natten.Kernels.Cuda;

namespace Natten.Kernels.BlockSparse;

/// <summary>
/// The tensor-core tiling of the block-sparse forward: <see cref="Queries"/> = 16·W query rows per group
/// (W warps of 16 rows, W ≤ <see cref="BlockSparseTensorCoreKernel.MaxWarps"/>) and KV sub-tiles of
/// <see cref="Keys"/> keys (a multiple of 16).
/// </summary>
internal readonly struct BlockSparseTensorCoreTile
{
    public readonly int Queries;
    public readonly int Keys;

    public BlockSparseTensorCoreTile(int queries, int keys) => (Queries, Keys) = (queries, keys);

    public int Warps => Queries / 16;

    /// <summary>Groups per query block (a short last slice has rows past the block's end).</summary>
    public int QueryGroupsPerBlock(int queryBlock) => (queryBlock + Queries - 1) / Queries;

    public override string ToString() => $"TC Q {Queries} / KV {Keys}";
}

/// <summary>
/// Block-sparse attention forward on tensor cores (version 1, like <see cref="Fused.FnaTensorCoreKernel"/>):
/// fp16 or bf16 inputs as raw bits, <c>mma.sync</c> m16n8k16 with f32 accumulation. One group per
/// (slice of 16·W queries of a query block, head, batch), W warps of 16 rows. The group walks its query
/// block's key-block list; each listed block is staged in KV sub-tiles of <see cref="BlockSparseTensorCoreTile.Keys"/>
/// keys (zero past the block's or the sequence's end). Per sub-tile: S = Q·Kᵀ · scale·log2 e on tensor
/// cores into shared floats; the row-wise online softmax (a lane per row, exp2) adding the bias and, for
/// partial blocks only, applying the element mask; P rounded to the input format; O += P·V on tensor
/// cores with O in per-lane accumulators (a local array). Output and LSE follow
/// <see cref="BlockSparseForwardKernel"/>: a row that saw no key gets output 0 and LSE −∞.
/// </summary>
/// <remarks>
/// Every loop bound around a barrier (and around <see cref="IHalfFormat.Mma"/>, whose CPU emulation
/// synchronises the group) depends only on the group's indices and the block list, so all threads make
/// the same sequence of calls. Requirements (checked by <see cref="BlockSparseTensorCore.Check"/>): D a
/// multiple of 16, Dv a multiple of 8 (≤ <see cref="MaxValueDim"/>), 32-lane warps, shared memory.
/// Dynamic shared memory (16-bit words): Q [Queries × D], K [Keys × D], V [Keys × Dv], P [Queries × Keys].
/// </remarks>
internal static class BlockSparseTensorCoreKernel
{
    public const int MaxWarps = 4;
    public const int MaxScores = 64 * 64;
    public const int MaxValueDim = 256;
    private const float Log2E = 1.4426950408889634f;

    public static void Forward<TFormat, TMask, TBias>(
        BlockSparseParams p, BlockSparseTensorCoreTile tile, BlockList blocks, TMask mask, TBias bias,
        ArrayView<ushort> query, ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<ushort> output, ArrayView<float> lse, int writeLse)
        where TFormat : struct, IHalfFormat
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        var scores = SharedMemory.Allocate<float>(MaxScores);
        var rowMax = SharedMemory.Allocate<float>(16 * MaxWarps);
        var rowSum = SharedMemory.Allocate<float>(16 * MaxWarps);
        var rowScale = SharedMemory.Allocate<float>(16 * MaxWarps);
        var scratchAll = SharedMemory.Allocate<uint>(TensorCore.ScratchWordsPerWarp * MaxWarps);
        var accumulators = LocalMemory.Allocate<float>(MaxValueDim / 2);

        var groupsPerBlock = tile.QueryGroupsPerBlock(p.QueryBlock);
        var queryBlock = Grid.IdxX / groupsPerBlock;
        var blockStart = queryBlock * p.QueryBlock;
        var first = blockStart + (Grid.IdxX % groupsPerBlock * tile.Queries);
        var end = Min(Min(blockStart + p.QueryBlock, p.QueryTokens), first + tile.Queries);
        if (first >= end)
        {
            return; // the whole group leaves (uniform: depends on the grid index only)
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
        var keys = tile.Keys;
        var shared = SharedMemory.GetDynamic<ushort>();
        var qTile = shared.SubView(0, tile.Queries * p.HeadDim);
        var kTile = shared.SubView(tile.Queries * p.HeadDim, keys * p.HeadDim);
        var vTile = shared.SubView((tile.Queries + keys) * p.HeadDim, keys * p.ValueDim);
        var pTile = shared.SubView(((tile.Queries + keys) * p.HeadDim) + (keys * p.ValueDim), tile.Queries * keys);

        // Q unscaled (the scale is applied to S in float); rows past the slice's end are zero.
        for (var e = tid; e < tile.Queries * p.HeadDim; e += threads)
        {
            var token = first + (e / p.HeadDim);
            var row = ((((long)batch * p.QueryTokens) + token) * p.Heads) + head;
            qTile[e] = token < end ? query[(row * p.HeadDim) + (e % p.HeadDim)] : (ushort)0;
        }

        for (var r = tid; r < tile.Queries; r += threads)
        {
            rowMax[r] = float.NegativeInfinity;
            rowSum[r] = 0f;
            rowScale[r] = 1f;
        }

        for (var i = 0; i < p.ValueDim / 2; i++)
        {
            accumulators[i] = 0f;
        }

        var scoreScale = p.Scale * Log2E;
        var listRow = p.ForwardRow(batch, head, queryBlock);
        var listEnd = blocks.Offsets[listRow + 1];
        for (var e = blocks.Offsets[listRow]; e < listEnd; e++)
        {
            var entry = blocks.Entries[e];
            var partial = BlockList.IsPartial(entry);
            var keyStart = BlockList.Block(entry) * p.KeyBlock;
            var keyEnd = Min(keyStart + p.KeyBlock, p.KeyTokens);
            for (var s = keyStart; s < keyEnd; s += keys)
            {
                var count = Min(keys, keyEnd - s);
                Group.Barrier(); // every warp is done with the previous sub-tile's K, V and P
                StageKeys(p, keys, s, count, batch, kvHead, key, value, kTile, vTile, tid, threads);
                Group.Barrier();
                Scores<TFormat>(p, warp, g, t, keys, qTile, kTile, scores, scoreScale, scratch);
                Group.Barrier();
                if (lane < 16)
                {
                    var local = (warp * 16) + lane;
                    var queryToken = first + local;
                    var valid = queryToken < end;
                    if (partial)
                    {
                        SoftmaxRow<TFormat, TMask, TBias>(
                            mask, bias, valid, batch, head, queryToken, s, count, local, keys, scores, pTile, rowMax, rowSum, rowScale);
                    }
                    else
                    {
                        SoftmaxRow<TFormat, AllowAll, TBias>(
                            default, bias, valid, batch, head, queryToken, s, count, local, keys, scores, pTile, rowMax, rowSum, rowScale);
                    }
                }

                Group.Barrier();
                WarpProducts.RescaleAndAddProductNN<TFormat>(p.ValueDim, warp, g, t, keys, pTile, vTile, rowScale, accumulators, scratch);
            }
        }

        // Normalise and store: lane (g, t) holds rows g and g + 8 of its warp, columns 2t, 2t+1 of every 8-column tile.
        Group.Barrier();
        for (var half = 0; half < 2; half++)
        {
            var local = (warp * 16) + g + (8 * half);
            var queryToken = first + local;
            if (queryToken >= end)
            {
                continue;
            }

            var row = ((((long)batch * p.QueryTokens) + queryToken) * p.Heads) + head;
            var sum = rowSum[local];
            var inverse = sum == 0f ? 0f : 1f / sum;
            for (var n = 0; n < p.ValueDim / 8; n++)
            {
                for (var j = 0; j < 2; j++)
                {
                    output[(row * p.ValueDim) + (n * 8) + (2 * t) + j] = TFormat.FromFloat(accumulators[(n * 4) + (2 * half) + j] * inverse);
                }
            }

            if (writeLse != 0 && t == 0)
            {
                lse[row] = sum == 0f ? float.NegativeInfinity : (rowMax[local] + XMath.Log2(sum)) * 0.6931471805599453f;
            }
        }
    }

    private static int Min(int a, int b) => a < b ? a : b;

    /// <summary>Copies the K and V rows of keys [first, first + count) into the sub-tile; slots after them are zero.</summary>
    private static void StageKeys(
        BlockSparseParams p, int keys, int first, int count, int batch, int kvHead,
        ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<ushort> kTile, ArrayView<ushort> vTile, int tid, int threads)
    {
        for (var e = tid; e < keys * p.HeadDim; e += threads)
        {
            var slot = e / p.HeadDim;
            var keyRow = ((((long)batch * p.KeyTokens) + first + slot) * p.KvHeads) + kvHead;
            kTile[e] = slot < count ? key[(keyRow * p.HeadDim) + (e % p.HeadDim)] : (ushort)0;
        }

        for (var e = tid; e < keys * p.ValueDim; e += threads)
        {
            var slot = e / p.ValueDim;
            var keyRow = ((((long)batch * p.KeyTokens) + first + slot) * p.KvHeads) + kvHead;
            vTile[e] = slot < count ? value[(keyRow * p.ValueDim) + (e % p.ValueDim)] : (ushort)0;
        }
    }

    /// <summary>S = Q·Kᵀ · scale·log2 e for this warp's 16 rows and every slot of the sub-tile, into shared floats.</summary>
    private static void Scores<TFormat>(
        BlockSparseParams p, int warp, int g, int t, int keys, ArrayView<ushort> qTile, ArrayView<ushort> kTile, ArrayView<float> scores,
        float scoreScale, ArrayView<uint> scratch)
        where TFormat : struct, IHalfFormat
    {
        for (var n = 0; n < keys / 8; n++)
        {
            float c0 = 0f, c1 = 0f, c2 = 0f, c3 = 0f;
            WarpProducts.ProductNT<TFormat>(qTile, p.HeadDim, warp * 16, kTile, p.HeadDim, n * 8, p.HeadDim, g, t, ref c0, ref c1, ref c2, ref c3, scratch);
            WarpProducts.Store(scores, keys, warp * 16, n * 8, g, t, scoreScale, c0, c1, c2, c3);
        }
    }

    /// <summary>
    /// One row's online-softmax step over the sub-tile: the allowed keys' scores (bias added, log2 domain;
    /// −∞ for masked slots, slots past <paramref name="count"/> and rows past the slice), the new max, the
    /// rescale factor of the row's output, the running sum (float32) and P rounded to the input format.
    /// </summary>
    private static void SoftmaxRow<TFormat, TMask, TBias>(
        TMask mask, TBias bias, bool valid, int batch, int head, int queryToken, int firstKey, int count, int local, int keys,
        ArrayView<float> scores, ArrayView<ushort> pTile, ArrayView<float> rowMax, ArrayView<float> rowSum, ArrayView<float> rowScale)
        where TFormat : struct, IHalfFormat
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        var previous = rowMax[local];
        var max = previous;
        for (var slot = 0; slot < keys; slot++)
        {
            var keyToken = firstKey + slot;
            var score = float.NegativeInfinity;
            if (valid && slot < count && mask.Allows(batch, head, queryToken, keyToken))
            {
                score = scores[(local * keys) + slot] + (bias.Bias(batch, head, queryToken, keyToken) * Log2E);
                max = score > max ? score : max;
            }

            scores[(local * keys) + slot] = score;
        }

        // No key seen yet: the accumulators stay zero and P = 0.
        var correction = max == float.NegativeInfinity ? 1f : XMath.Exp2(previous - max);
        var sum = rowSum[local] * correction;
        for (var slot = 0; slot < keys; slot++)
        {
            var score = scores[(local * keys) + slot];
            var pValue = score == float.NegativeInfinity ? 0f : XMath.Exp2(score - max);
            pTile[(local * keys) + slot] = TFormat.FromFloat(pValue);

            // As FlashAttention-2: the running sum (hence the LSE) in float32; only P·V sees the rounded P.
            sum += pValue;
        }

        rowMax[local] = max;
        rowSum[local] = sum;
        rowScale[local] = correction;
    }

}
