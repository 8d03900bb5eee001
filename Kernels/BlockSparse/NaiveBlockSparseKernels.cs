using ILGPU;
using ILGPU.Algorithms;
using Natten.Kernels.Common;

namespace Natten.Kernels.BlockSparse;

/// <summary>
/// The unfused ("naive") block-sparse forward, the baseline the fused kernels are measured against,
/// in the style of the neighborhood-attention kernels of <c>Kernels/Naive</c>: for a chunk of batch
/// entries, the dense score matrix <c>S = scale · Q Kᵀ + bias</c> of every (batch, head) is written to a
/// <c>[batches, H, Nq, Nk]</c> float workspace with −∞ wherever the <c>BlockMask</c> forbids the pair
/// (key block not listed, or partial and the element mask says no), then a row softmax in place, then
/// the dense product <c>P V</c>. Every (query, key) pair costs the same whatever the pattern: this is
/// masked dense attention (PyTorch's math SDPA with a boolean mask), not a sparse kernel.
/// </summary>
/// <remarks>
/// One thread per output element, grid-stride loops (<c>count</c> items, <c>stride</c> threads), float32
/// math whatever the storage. Workspace index of (local batch, head, query, key):
/// <c>((local · H + head) · Nq + query) · Nk + key</c>. A query with no allowed key gets output 0 and
/// LSE −∞, as in the fused kernels.
/// </remarks>
internal static class NaiveBlockSparseKernels
{
    /// <summary>scores[local, h, q, k] = scale · q·k + bias for allowed pairs, −∞ otherwise (the dot product is always computed: dense).</summary>
    public static void Scores<T, TS, TMask, TBias>(
        Index1D index, BlockSparseParams p, long count, int stride, int firstBatch, BlockList blocks, TMask mask, TBias bias,
        ArrayView<T> query, ArrayView<T> key, ArrayView<float> scores)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        for (long e = index.X; e < count; e += stride)
        {
            var k = (int)(e % p.KeyTokens);
            var rest = e / p.KeyTokens;
            var q = (int)(rest % p.QueryTokens);
            rest /= p.QueryTokens;
            var h = (int)(rest % p.Heads);
            var b = firstBatch + (int)(rest / p.Heads);
            var queryRow = ((((long)b * p.QueryTokens) + q) * p.Heads) + h;
            var keyRow = ((((long)b * p.KeyTokens) + k) * p.KvHeads) + p.KvHeadOf(h);
            var acc = 0f;
            for (var c = 0; c < p.HeadDim; c++)
            {
                acc += TS.Load(query[(queryRow * p.HeadDim) + c]) * TS.Load(key[(keyRow * p.HeadDim) + c]);
            }

            scores[e] = Allowed(p, blocks, mask, b, h, q, k) ? (acc * p.Scale) + bias.Bias(b, h, q, k) : float.NegativeInfinity;
        }
    }

    /// <summary>In place over each row: scores become probabilities (all 0 in a row with no allowed key); lse[row] = log Σ exp when <c>writeLse</c> is 1.</summary>
    public static void Softmax(
        Index1D index, BlockSparseParams p, long count, int stride, int firstBatch, ArrayView<float> scores, ArrayView<float> lse, int writeLse)
    {
        for (long r = index.X; r < count; r += stride)
        {
            var start = r * p.KeyTokens;
            var max = float.NegativeInfinity;
            for (var k = 0; k < p.KeyTokens; k++)
            {
                var s = scores[start + k];
                max = s > max ? s : max;
            }

            var q = (int)(r % p.QueryTokens);
            var h = (int)(r / p.QueryTokens % p.Heads);
            var b = firstBatch + (int)(r / p.QueryTokens / p.Heads);
            var row = ((((long)b * p.QueryTokens) + q) * p.Heads) + h;
            if (max == float.NegativeInfinity)
            {
                // No allowed key: P = 0 (output 0), LSE −∞.
                for (var k = 0; k < p.KeyTokens; k++)
                {
                    scores[start + k] = 0f;
                }

                if (writeLse != 0)
                {
                    lse[row] = float.NegativeInfinity;
                }

                continue;
            }

            var sum = 0f;
            for (var k = 0; k < p.KeyTokens; k++)
            {
                sum += XMath.Exp(scores[start + k] - max);
            }

            var inverse = 1f / sum;
            for (var k = 0; k < p.KeyTokens; k++)
            {
                scores[start + k] = XMath.Exp(scores[start + k] - max) * inverse;
            }

            if (writeLse != 0)
            {
                lse[row] = max + XMath.Log(sum);
            }
        }
    }

    /// <summary>output[b, q, h, c] = Σ over every key of P[q, k] · v[k, c] (dense: forbidden keys add 0).</summary>
    public static void WeightedValues<T, TS>(
        Index1D index, BlockSparseParams p, long count, int stride, int firstBatch, ArrayView<float> probabilities, ArrayView<T> value, ArrayView<T> output)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        for (long e = index.X; e < count; e += stride)
        {
            var c = (int)(e % p.ValueDim);
            var r = e / p.ValueDim;
            var q = (int)(r % p.QueryTokens);
            var h = (int)(r / p.QueryTokens % p.Heads);
            var b = firstBatch + (int)(r / p.QueryTokens / p.Heads);
            var kvHead = p.KvHeadOf(h);
            var start = r * p.KeyTokens;
            var acc = 0f;
            for (var k = 0; k < p.KeyTokens; k++)
            {
                var keyRow = ((((long)b * p.KeyTokens) + k) * p.KvHeads) + kvHead;
                acc += probabilities[start + k] * TS.Load(value[(keyRow * p.ValueDim) + c]);
            }

            var row = ((((long)b * p.QueryTokens) + q) * p.Heads) + h;
            output[(row * p.ValueDim) + c] = TS.Store(acc);
        }
    }

    /// <summary>
    /// Whether the block mask allows (query, key) of (batch, head): the key block is in the query block's
    /// sorted list (binary search) and is full, or partial and the element mask allows the pair.
    /// </summary>
    internal static bool Allowed<TMask>(BlockSparseParams p, BlockList blocks, TMask mask, int batch, int head, int query, int key)
        where TMask : struct, IElementMask
    {
        var row = p.ForwardRow(batch, head, query / p.QueryBlock);
        var keyBlock = key / p.KeyBlock;
        var lo = blocks.Offsets[row];
        var hi = blocks.Offsets[row + 1] - 1;
        while (lo <= hi)
        {
            var mid = (lo + hi) >> 1;
            var entry = blocks.Entries[mid];
            var block = BlockList.Block(entry);
            if (block == keyBlock)
            {
                return !BlockList.IsPartial(entry) || mask.Allows(batch, head, query, key);
            }

            if (block < keyBlock)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }

        return false;
    }
}
