using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;
using Natten.Kernels.Cuda;
using Natten.Kernels.Fused;

namespace Natten.Kernels.BlockSparse;

/// <summary>
/// The pairs one lane scores in a staged KV sub-tile of the register-resident block-sparse forward: its two query
/// rows (tokens <see cref="QueryTop"/> = row g and <see cref="QueryBottom"/> = row g + 8 of its warp, −1 for a row past
/// the query slice) against keys <see cref="FirstKey"/> + slot for slots below <see cref="Count"/> (the keys of the
/// listed block that the sub-tile holds; later slots are zero padding).
/// </summary>
internal readonly struct BlockSparsePairs
{
    public readonly int Batch;
    public readonly int Head;
    public readonly int QueryTop;
    public readonly int QueryBottom;
    public readonly int FirstKey;
    public readonly int Count;

    public BlockSparsePairs(int batch, int head, int queryTop, int queryBottom, int firstKey, int count)
        => (Batch, Head, QueryTop, QueryBottom, FirstKey, Count) = (batch, head, queryTop, queryBottom, firstKey, count);
}

/// <summary>
/// Hand-written pieces of the generated register-resident block-sparse forwards
/// (<c>Kernels/BlockSparse/Generated/BlockSparseTensorCoreKernel.D*.g.cs</c>): staging Q, K and V with padded rows,
/// the per-element scale, bias and mask of one m16n8 score tile, and the flat row of a query. The order of the score
/// arithmetic is <see cref="BlockSparseTensorCoreKernel"/>'s: s = q·k · (scale · log2 e) + bias · log2 e for an allowed
/// pair, −∞ otherwise (the mask and the bias are never asked about an absent query or a padding slot).
/// </summary>
internal static class BlockSparseRegisterTile
{
    /// <summary>Stages queries [first, end) of the slice (unscaled) into <paramref name="queries"/> rows <paramref name="stride"/> words apart; later rows are zero.</summary>
    public static void StageQuery(
        BlockSparseParams p, int first, int end, int queries, int batch, int head,
        ArrayView<ushort> query, ArrayView<ushort> qTile, int stride, int tid, int threads)
    {
        for (var e = tid; e < queries * p.HeadDim; e += threads)
        {
            var local = e / p.HeadDim;
            var column = e % p.HeadDim;
            var token = first + local;
            var row = ((((long)batch * p.QueryTokens) + token) * p.Heads) + head;
            qTile[(local * stride) + column] = token < end ? query[(row * p.HeadDim) + column] : (ushort)0;
        }
    }

    /// <summary>Stages the K and V rows of keys [first, first + count) (D = Dv) into <paramref name="keys"/> rows each; later slots are zero.</summary>
    public static void StageKeys(
        BlockSparseParams p, int keys, int first, int count, int batch, int kvHead,
        ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<ushort> kTile, ArrayView<ushort> vTile, int stride, int tid, int threads)
    {
        for (var e = tid; e < keys * p.HeadDim; e += threads)
        {
            var slot = e / p.HeadDim;
            var column = e % p.HeadDim;
            var keyRow = ((((long)batch * p.KeyTokens) + first + slot) * p.KvHeads) + kvHead;
            var at = (slot * stride) + column;
            if (slot < count)
            {
                kTile[at] = key[(keyRow * p.HeadDim) + column];
                vTile[at] = value[(keyRow * p.HeadDim) + column];
            }
            else
            {
                kTile[at] = 0;
                vTile[at] = 0;
            }
        }
    }

    /// <summary>
    /// KV sub-tiles of <paramref name="keys"/> keys per key block: every listed block is walked in this many steps, except the
    /// last key block of the sequence when it is short (<see cref="Steps"/>, <see cref="Step"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int StepsPerBlock(BlockSparseParams p, int keys) => (p.KeyBlock + keys - 1) / keys;

    /// <summary>
    /// Steps of the flattened walk over list entries [<paramref name="listStart"/>, <paramref name="listEnd"/>): step s is
    /// sub-tile s % perBlock of entry listStart + s / perBlock. Lists are sorted, so only the last entry can be the sequence's
    /// last key block; when it is and it has fewer sub-tiles, the walk ends after them. (An unsorted list stays correct: a short
    /// block elsewhere gets steps with no keys, which <see cref="Step"/> reports as count ≤ 0: staged as zeros, not computed.)
    /// </summary>
    public static int Steps(BlockSparseParams p, BlockList blocks, int listStart, int listEnd, int keys)
    {
        if (listEnd <= listStart)
        {
            return 0;
        }

        var perBlock = StepsPerBlock(p, keys);
        var lastStart = BlockList.Block(blocks.Entries[listEnd - 1]) * p.KeyBlock;
        var lastKeys = XMath.Min(p.KeyBlock, p.KeyTokens - lastStart);
        return ((listEnd - listStart - 1) * perBlock) + ((lastKeys + keys - 1) / keys);
    }

    /// <summary>
    /// Step <paramref name="step"/> of the flattened walk (<see cref="Steps"/>): whether its block is partial, its first key and how
    /// many of the sub-tile's <paramref name="keys"/> slots hold keys of the block (≤ 0: none).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Step(
        BlockSparseParams p, BlockList blocks, int listStart, int keys, int step, out bool partial, out int start, out int count)
    {
        var perBlock = StepsPerBlock(p, keys);
        var entry = blocks.Entries[listStart + (step / perBlock)];
        partial = BlockList.IsPartial(entry);
        var keyStart = BlockList.Block(entry) * p.KeyBlock;
        start = keyStart + (step % perBlock * keys);
        count = XMath.Min(keys, XMath.Min(keyStart + p.KeyBlock, p.KeyTokens) - start);
    }

    /// <summary>
    /// Issues the staging of step <paramref name="step"/> of the flattened walk into <paramref name="buffer"/> (K rows at 0, V rows at
    /// <c>keys · stride</c>; slots past the block's or the sequence's end zero) with <typeparamref name="TStaging"/>:
    /// <see cref="AsyncStaging"/> (<c>Lookahead</c> &gt; 0) in 16-byte <c>cp.async</c> chunks (<see cref="StageKeyChunks"/>), the
    /// synchronous element staging otherwise (<see cref="StageKeys"/>). Asynchronous copies land after commit, wait and barrier.
    /// </summary>
    public static void Stage<TStaging>(
        BlockSparseParams p, BlockList blocks, int listStart, int keys, int step, int batch, int kvHead,
        ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<ushort> buffer, int stride, int tid, int threads)
        where TStaging : struct, IKvStaging
    {
        Step(p, blocks, listStart, keys, step, out _, out var start, out var count);
        var kTile = buffer.SubView(0, keys * stride);
        var vTile = buffer.SubView(keys * stride, keys * stride);
        if (TStaging.Lookahead > 0)
        {
            StageKeyChunks(p, keys, start, count, batch, kvHead, key, value, kTile, vTile, stride, tid, threads);
        }
        else
        {
            StageKeys(p, keys, start, count, batch, kvHead, key, value, kTile, vTile, stride, tid, threads);
        }
    }

    /// <summary>
    /// <see cref="StageKeys"/> in 16-byte chunks (<see cref="AsyncCopy.Copy16"/>, asynchronous on CUDA): thread <c>tid</c> takes
    /// chunks tid, tid + threads, … of the sub-tile's <c>keys × D/8</c>; one key-row computation per chunk serves its K and V copy;
    /// slots at or past <paramref name="count"/> are zero-filled (nothing read). Needs D = Dv, D % 8 == 0, 16-byte aligned K and V
    /// views and rows <paramref name="stride"/> a multiple of 8.
    /// </summary>
    public static void StageKeyChunks(
        BlockSparseParams p, int keys, int first, int count, int batch, int kvHead,
        ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<ushort> kTile, ArrayView<ushort> vTile, int stride, int tid, int threads)
    {
        var chunks = p.HeadDim / AsyncCopy.Elements;
        for (var c = tid; c < keys * chunks; c += threads)
        {
            var slot = c / chunks;
            var column = (c - (slot * chunks)) * AsyncCopy.Elements;
            var keyRow = ((((long)batch * p.KeyTokens) + first + slot) * p.KvHeads) + kvHead;
            var at = (slot * stride) + column;
            var valid = slot < count;
            AsyncCopy.Copy16(kTile, at, key, (keyRow * p.HeadDim) + column, valid);
            AsyncCopy.Copy16(vTile, at, value, (keyRow * p.HeadDim) + column, valid);
        }
    }

    /// <summary>
    /// Scales one m16n8 score tile (lane (g, t): c0, c1 = row g, slots <paramref name="slot"/>, slot + 1; c2, c3 = row
    /// g + 8, same slots), adds the bias and sets disallowed elements to −∞. With <see cref="AllowAll"/> and
    /// <see cref="NoBias"/> only the row and slot bounds remain.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Mask<TMask, TBias>(
        TMask mask, TBias bias, BlockSparsePairs pairs, int slot, float scale, ref float c0, ref float c1, ref float c2, ref float c3)
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        c0 = Score(mask, bias, pairs, pairs.QueryTop, slot, scale, c0);
        c1 = Score(mask, bias, pairs, pairs.QueryTop, slot + 1, scale, c1);
        c2 = Score(mask, bias, pairs, pairs.QueryBottom, slot, scale, c2);
        c3 = Score(mask, bias, pairs, pairs.QueryBottom, slot + 1, scale, c3);
    }

    /// <summary>The flat row (batch, token, head) of a query of the slice, or −1 past its end.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long QueryRow(BlockSparseParams p, int batch, int head, int token, int end)
        => token < end ? ((((long)batch * p.QueryTokens) + token) * p.Heads) + head : -1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Score<TMask, TBias>(TMask mask, TBias bias, BlockSparsePairs pairs, int query, int slot, float scale, float product)
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        if (query < 0 || slot >= pairs.Count || !mask.Allows(pairs.Batch, pairs.Head, query, pairs.FirstKey + slot))
        {
            return float.NegativeInfinity;
        }

        return (product * scale) + (bias.Bias(pairs.Batch, pairs.Head, query, pairs.FirstKey + slot) * FnaRegisterTile.Log2E);
    }
}
