using ILGPU;
using ILGPU.Algorithms;
using Natten.Kernels.Common;

namespace Natten.Kernels.BlockSparse;

/// <summary>
/// The unfused ("naive") block-sparse forward and backward, the baseline the fused kernels are measured against,
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

    /// <summary>rowTerm[row] = Σ_c dO[row, c] · O[row, c] over the problem's query rows (global row index, layout [B, Nq, H]).</summary>
    public static void RowTerm<T, TS>(
        Index1D index, BlockSparseParams p, long count, int stride, ArrayView<T> output, ArrayView<T> outputGrad, ArrayView<float> rowTerm)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        for (long row = index.X; row < count; row += stride)
        {
            var acc = 0f;
            for (var c = 0; c < p.ValueDim; c++)
            {
                acc += TS.Load(outputGrad[(row * p.ValueDim) + c]) * TS.Load(output[(row * p.ValueDim) + c]);
            }

            rowTerm[row] = acc;
        }
    }

    /// <summary>
    /// The backward's dense matrices for a chunk of batch entries, one thread per (query, key) pair:
    /// P = exp(scale · q·k + bias − LSE) where allowed (0 elsewhere and in rows with LSE −∞), and
    /// dS = P · (dO·v − rowTerm).
    /// </summary>
    public static void ProbabilitiesAndScoreGrads<T, TS, TMask, TBias>(
        Index1D index, BlockSparseParams p, NaiveRange range, BlockList blocks, TMask mask, TBias bias,
        ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<float> lse, ArrayView<float> rowTerm, ArrayView<T> outputGrad,
        ArrayView<float> probabilities, ArrayView<float> scoreGrads)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        for (long e = index.X; e < range.Count; e += range.Stride)
        {
            var k = (int)(e % p.KeyTokens);
            var rest = e / p.KeyTokens;
            var q = (int)(rest % p.QueryTokens);
            rest /= p.QueryTokens;
            var h = (int)(rest % p.Heads);
            var b = range.FirstBatch + (int)(rest / p.Heads);
            var queryRow = ((((long)b * p.QueryTokens) + q) * p.Heads) + h;
            var keyRow = ((((long)b * p.KeyTokens) + k) * p.KvHeads) + p.KvHeadOf(h);
            var rowLse = lse[queryRow];
            if (rowLse == float.NegativeInfinity || !Allowed(p, blocks, mask, b, h, q, k))
            {
                probabilities[e] = 0f;
                scoreGrads[e] = 0f;
                continue;
            }

            var score = 0f;
            for (var c = 0; c < p.HeadDim; c++)
            {
                score += TS.Load(query[(queryRow * p.HeadDim) + c]) * TS.Load(key[(keyRow * p.HeadDim) + c]);
            }

            var probability = XMath.Exp((score * p.Scale) + bias.Bias(b, h, q, k) - rowLse);
            var dp = 0f;
            for (var c = 0; c < p.ValueDim; c++)
            {
                dp += TS.Load(outputGrad[(queryRow * p.ValueDim) + c]) * TS.Load(value[(keyRow * p.ValueDim) + c]);
            }

            probabilities[e] = probability;
            scoreGrads[e] = probability * (dp - rowTerm[queryRow]);
        }
    }

    /// <summary>
    /// Hands the chunk's dS to a bias-gradient sink, one thread per query row (batch, head, query) walking its
    /// query block's list entries in order and each entry's keys in order — the visiting order of the fused dQ
    /// kernel, so every sink has one writer per element and the result is deterministic. Pairs the mask forbids
    /// carry dS = 0.
    /// </summary>
    public static void ScatterBiasGradient<TBias, TSink>(
        Index1D index, BlockSparseParams p, NaiveRange range, BlockList blocks, TBias bias, ArrayView<float> scoreGrads, TSink sink)
        where TBias : struct, IScoreBias
        where TSink : struct, IBiasGradientSink
    {
        for (long r = index.X; r < range.Count; r += range.Stride)
        {
            var q = (int)(r % p.QueryTokens);
            var rest = r / p.QueryTokens;
            var h = (int)(rest % p.Heads);
            var local = (int)(rest / p.Heads);
            var b = range.FirstBatch + local;
            var row = ((((long)b * p.QueryTokens) + q) * p.Heads) + h;
            var listRow = p.ForwardRow(b, h, q / p.QueryBlock);
            var pairs = ((((long)local * p.Heads) + h) * p.QueryTokens) + q;
            for (var entry = blocks.Offsets[listRow]; entry < blocks.Offsets[listRow + 1]; entry++)
            {
                var first = BlockList.Block(blocks.Entries[entry]) * p.KeyBlock;
                var last = XMath.Min(first + p.KeyBlock, p.KeyTokens);
                for (var k = first; k < last; k++)
                {
                    sink.Add(bias, b, h, q, k, entry, row, scoreGrads[(pairs * p.KeyTokens) + k]);
                }
            }
        }
    }

    /// <summary>dQ[b, q, h, c] = scale · Σ over every key of dS[q, k] · K[k, c] (dense).</summary>
    public static void QueryGrad<T, TS>(
        Index1D index, BlockSparseParams p, long count, int stride, int firstBatch, ArrayView<float> scoreGrads, ArrayView<T> key, ArrayView<T> queryGrad)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        for (long e = index.X; e < count; e += stride)
        {
            var c = (int)(e % p.HeadDim);
            var r = e / p.HeadDim;
            var q = (int)(r % p.QueryTokens);
            var h = (int)(r / p.QueryTokens % p.Heads);
            var b = firstBatch + (int)(r / p.QueryTokens / p.Heads);
            var kvHead = p.KvHeadOf(h);
            var start = r * p.KeyTokens;
            var acc = 0f;
            for (var k = 0; k < p.KeyTokens; k++)
            {
                var keyRow = ((((long)b * p.KeyTokens) + k) * p.KvHeads) + kvHead;
                acc += scoreGrads[start + k] * TS.Load(key[(keyRow * p.HeadDim) + c]);
            }

            var row = ((((long)b * p.QueryTokens) + q) * p.Heads) + h;
            queryGrad[(row * p.HeadDim) + c] = TS.Store(acc * p.Scale);
        }
    }

    /// <summary>
    /// dK[b, k, g, c] = scale · Σ over the query heads h of KV head g and every query of dS[h, q, k] · Q[q, h, c], and
    /// dV[b, k, g, c] = Σ of P[h, q, k] · dO[q, h, c], in a fixed order (deterministic); one thread per (key, KV head, channel).
    /// </summary>
    public static void KeyValueGrad<T, TS>(
        Index1D index, BlockSparseParams p, long count, int stride, int firstBatch, ArrayView<float> probabilities, ArrayView<float> scoreGrads,
        ArrayView<T> query, ArrayView<T> outputGrad, ArrayView<T> keyGrad, ArrayView<T> valueGrad)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        var channels = p.HeadDim > p.ValueDim ? p.HeadDim : p.ValueDim;
        var group = p.Heads / p.KvHeads;
        for (long e = index.X; e < count; e += stride)
        {
            var c = (int)(e % channels);
            var r = e / channels;
            var g = (int)(r % p.KvHeads);
            var k = (int)(r / p.KvHeads % p.KeyTokens);
            var local = (int)(r / p.KvHeads / p.KeyTokens);
            var b = firstBatch + local;
            var dk = 0f;
            var dv = 0f;
            for (var h = g * group; h < (g + 1) * group; h++)
            {
                for (var q = 0; q < p.QueryTokens; q++)
                {
                    var pair = ((((((long)local * p.Heads) + h) * p.QueryTokens) + q) * p.KeyTokens) + k;
                    var queryRow = ((((long)b * p.QueryTokens) + q) * p.Heads) + h;
                    if (c < p.HeadDim)
                    {
                        dk += scoreGrads[pair] * TS.Load(query[(queryRow * p.HeadDim) + c]);
                    }

                    if (c < p.ValueDim)
                    {
                        dv += probabilities[pair] * TS.Load(outputGrad[(queryRow * p.ValueDim) + c]);
                    }
                }
            }

            var keyRow = ((((long)b * p.KeyTokens) + k) * p.KvHeads) + g;
            if (c < p.HeadDim)
            {
                keyGrad[(keyRow * p.HeadDim) + c] = TS.Store(dk * p.Scale);
            }

            if (c < p.ValueDim)
            {
                valueGrad[(keyRow * p.ValueDim) + c] = TS.Store(dv);
            }
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

/// <summary>A grid-stride launch over <see cref="Count"/> items of the chunk starting at batch entry <see cref="FirstBatch"/>.</summary>
internal readonly struct NaiveRange
{
    public readonly long Count;
    public readonly int Stride;
    public readonly int FirstBatch;

    public NaiveRange(long count, int stride, int firstBatch) => (Count, Stride, FirstBatch) = (count, stride, firstBatch);
}
