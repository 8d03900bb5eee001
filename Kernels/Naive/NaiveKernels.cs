using ILGPU;
using ILGPU.Algorithms;
using Natten.Kernels.Common;

namespace Natten.Kernels.Naive;

/// <summary>
/// NATTEN's original unfused neighborhood attention: scores into a <c>[rows, ∏K]</c> weight tensor,
/// a softmax over each window, then the weighted sum of values — and the unfused gradient kernels.
/// One thread per output element, grid-stride loops (<c>count</c> items, <c>stride</c>
/// threads) so 64-bit element counts work. Math in float32 whatever the storage.
/// Layouts: q/o rows are (b, token, head); k/v rows (b, token, kv head); weights [row, slot].
/// </summary>
internal static class NaiveKernels
{
    /// <summary>weights[row, slot] = scale · q·k for the slot's key, −∞ for slots a causal axis truncates.</summary>
    public static void Scores<T, TS>(
        Index1D index, ProblemParams p, long count, int stride, ArrayView<T> query, ArrayView<T> key, ArrayView<float> weights)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        for (long e = index.X; e < count; e += stride)
        {
            var slot = (int)(e % p.WindowSize);
            var row = e / p.WindowSize;
            var keyRow = KeyRowOfSlot(p, row, slot);
            if (keyRow < 0)
            {
                weights[e] = float.NegativeInfinity;
                continue;
            }

            var acc = 0f;
            for (var c = 0; c < p.HeadDim; c++)
            {
                acc += TS.Load(query[(row * p.HeadDim) + c]) * TS.Load(key[(keyRow * p.HeadDim) + c]);
            }

            weights[e] = acc * p.Scale;
        }
    }

    /// <summary>In place over each row's window: weights become softmax probabilities; lse[row] = log Σ exp.</summary>
    public static void Softmax(Index1D index, ProblemParams p, long count, int stride, ArrayView<float> weights, ArrayView<float> lse)
    {
        for (long row = index.X; row < count; row += stride)
        {
            var start = row * p.WindowSize;
            var max = float.NegativeInfinity;
            for (var w = 0; w < p.WindowSize; w++)
            {
                var s = weights[start + w];
                max = s > max ? s : max;
            }

            // Every NA query sees at least one key, so max is finite unless a score is NaN or +∞;
            // then the row turns NaN, as it should, and no other row is touched.
            var sum = 0f;
            for (var w = 0; w < p.WindowSize; w++)
            {
                sum += XMath.Exp(weights[start + w] - max);
            }

            for (var w = 0; w < p.WindowSize; w++)
            {
                weights[start + w] = XMath.Exp(weights[start + w] - max) / sum;
            }

            lse[row] = max + XMath.Log(sum);
        }
    }

    /// <summary>output[row, c] = Σ_slot weights[row, slot] · v[key(slot), c].</summary>
    public static void WeightedValues<T, TS, TOut, TOutS>(
        Index1D index, ProblemParams p, long count, int stride, ArrayView<float> weights, ArrayView<T> value, ArrayView<TOut> output)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
        where TOut : unmanaged
        where TOutS : struct, IElementStorage<TOut>
    {
        for (long e = index.X; e < count; e += stride)
        {
            var c = (int)(e % p.ValueDim);
            var row = e / p.ValueDim;
            var acc = 0f;
            for (var w = 0; w < p.WindowSize; w++)
            {
                var keyRow = KeyRowOfSlot(p, row, w);
                if (keyRow >= 0)
                {
                    acc += weights[(row * p.WindowSize) + w] * TS.Load(value[(keyRow * p.ValueDim) + c]);
                }
            }

            output[e] = TOutS.Store(acc);
        }
    }

    /// <summary>Dense attention of every query over the additional tokens only: output[row, c] and lse[row].</summary>
    public static void AdditionalAttention<T, TS>(
        Index1D index, ProblemParams p, long count, int stride, ArrayView<T> query, ArrayView<T> additionalKey,
        ArrayView<T> additionalValue, ArrayView<float> output, ArrayView<float> lse)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        for (long e = index.X; e < count; e += stride)
        {
            var c = (int)(e % p.ValueDim);
            var row = e / p.ValueDim;
            var max = float.NegativeInfinity;
            for (var m = 0; m < p.AdditionalTokens; m++)
            {
                var s = AdditionalScore<T, TS>(p, row, m, query, additionalKey);
                max = s > max ? s : max;
            }

            var sum = 0f;
            var acc = 0f;
            for (var m = 0; m < p.AdditionalTokens; m++)
            {
                var weight = XMath.Exp(AdditionalScore<T, TS>(p, row, m, query, additionalKey) - max);
                sum += weight;
                acc += weight * TS.Load(additionalValue[(AdditionalRow(p, row, m) * p.ValueDim) + c]);
            }

            output[e] = acc / sum;
            if (c == 0)
            {
                lse[row] = max + XMath.Log(sum);
            }
        }
    }

    /// <summary>Merges two partial attentions of the same rows over disjoint keys into output and lse.</summary>
    public static void Merge<TOut, TOutS>(
        Index1D index, ProblemParams p, long count, int stride, ArrayView<float> output1, ArrayView<float> lse1,
        ArrayView<float> output2, ArrayView<float> lse2, ArrayView<TOut> output, ArrayView<float> lse)
        where TOut : unmanaged
        where TOutS : struct, IElementStorage<TOut>
    {
        for (long e = index.X; e < count; e += stride)
        {
            var c = (int)(e % p.ValueDim);
            var row = e / p.ValueDim;
            var l1 = lse1[row];
            var l2 = lse2[row];
            var m = l1 > l2 ? l1 : l2;
            var w1 = XMath.Exp(l1 - m);
            var w2 = XMath.Exp(l2 - m);
            output[e] = TOutS.Store(((w1 * output1[e]) + (w2 * output2[e])) / (w1 + w2));
            if (c == 0)
            {
                lse[row] = m + XMath.Log(w1 + w2);
            }
        }
    }

    /// <summary>Backward row term D[row] = dO · O.</summary>
    public static void RowTerm<T, TS>(
        Index1D index, ProblemParams p, long count, int stride, ArrayView<T> output, ArrayView<T> outputGrad, ArrayView<float> rowTerm)
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

    /// <summary>
    /// From recomputed scores: probabilities P = exp(s − lse) (in place) and dS = P · (dO·v − D).
    /// </summary>
    public static void ScoreGradients<T, TS>(
        Index1D index, ProblemParams p, long count, int stride, ArrayView<float> weights, ArrayView<float> lse,
        ArrayView<float> rowTerm, ArrayView<T> value, ArrayView<T> outputGrad, ArrayView<float> scoreGrad)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        for (long e = index.X; e < count; e += stride)
        {
            var slot = (int)(e % p.WindowSize);
            var row = e / p.WindowSize;
            var keyRow = KeyRowOfSlot(p, row, slot);
            if (keyRow < 0)
            {
                weights[e] = 0f;
                scoreGrad[e] = 0f;
                continue;
            }

            var prob = XMath.Exp(weights[e] - lse[row]);
            var dp = 0f;
            for (var c = 0; c < p.ValueDim; c++)
            {
                dp += TS.Load(outputGrad[(row * p.ValueDim) + c]) * TS.Load(value[(keyRow * p.ValueDim) + c]);
            }

            weights[e] = prob;
            scoreGrad[e] = prob * (dp - rowTerm[row]);
        }
    }

    /// <summary>The same for the additional tokens: probabilities and dS into [row, m] buffers.</summary>
    public static void AdditionalScoreGradients<T, TS>(
        Index1D index, ProblemParams p, long count, int stride, ArrayView<T> query, ArrayView<T> additionalKey,
        ArrayView<T> additionalValue, ArrayView<float> lse, ArrayView<float> rowTerm, ArrayView<T> outputGrad,
        ArrayView<float> probs, ArrayView<float> scoreGrad)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        for (long e = index.X; e < count; e += stride)
        {
            var m = (int)(e % p.AdditionalTokens);
            var row = e / p.AdditionalTokens;
            var prob = XMath.Exp(AdditionalScore<T, TS>(p, row, m, query, additionalKey) - lse[row]);
            var valueRow = AdditionalRow(p, row, m);
            var dp = 0f;
            for (var c = 0; c < p.ValueDim; c++)
            {
                dp += TS.Load(outputGrad[(row * p.ValueDim) + c]) * TS.Load(additionalValue[(valueRow * p.ValueDim) + c]);
            }

            probs[e] = prob;
            scoreGrad[e] = prob * (dp - rowTerm[row]);
        }
    }

    /// <summary>dQ[row, c] = scale · (Σ_slot dS · k[key(slot), c] + Σ_m dS_add · ak[m, c]).</summary>
    public static void QueryGrad<T, TS>(
        Index1D index, ProblemParams p, long count, int stride, ArrayView<float> scoreGrad, ArrayView<T> key,
        ArrayView<float> additionalScoreGrad, ArrayView<T> additionalKey, ArrayView<T> queryGrad)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        for (long e = index.X; e < count; e += stride)
        {
            var c = (int)(e % p.HeadDim);
            var row = e / p.HeadDim;
            var acc = 0f;
            for (var w = 0; w < p.WindowSize; w++)
            {
                var keyRow = KeyRowOfSlot(p, row, w);
                if (keyRow >= 0)
                {
                    acc += scoreGrad[(row * p.WindowSize) + w] * TS.Load(key[(keyRow * p.HeadDim) + c]);
                }
            }

            for (var m = 0; m < p.AdditionalTokens; m++)
            {
                acc += additionalScoreGrad[(row * p.AdditionalTokens) + m] * TS.Load(additionalKey[(AdditionalRow(p, row, m) * p.HeadDim) + c]);
            }

            queryGrad[e] = TS.Store(acc * p.Scale);
        }
    }

    /// <summary>
    /// dK and dV of one (b, key token, kv head, channel): sums over the query heads of the kv head's
    /// group and over the inverse neighborhood (the queries that see this key) of
    /// scale · dS · q and P · dO. Channel runs to max(D, Dv).
    /// </summary>
    public static void KeyValueGrad<T, TS>(
        Index1D index, ProblemParams p, long count, int stride, ArrayView<T> query, ArrayView<T> outputGrad,
        ArrayView<float> probs, ArrayView<float> scoreGrad, ArrayView<T> keyGrad, ArrayView<T> valueGrad)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        var channels = p.HeadDim > p.ValueDim ? p.HeadDim : p.ValueDim;
        var group = p.Heads / p.KvHeads;
        for (long e = index.X; e < count; e += stride)
        {
            var c = (int)(e % channels);
            var kvRow = e / channels; // (b, token, kv head)
            var hk = (int)(kvRow % p.KvHeads);
            var bt = kvRow / p.KvHeads;
            var b = bt / p.Tokens;
            p.Coordinates(bt % p.Tokens, out var y0, out var y1, out var y2);
            WindowRule.QueryRange(y0, p.N0, p.K0, p.S0, p.D0, p.C0 != 0, out var q0, out var n0);
            WindowRule.QueryRange(y1, p.N1, p.K1, p.S1, p.D1, p.C1 != 0, out var q1, out var n1);
            WindowRule.QueryRange(y2, p.N2, p.K2, p.S2, p.D2, p.C2 != 0, out var q2, out var n2);
            var accK = 0f;
            var accV = 0f;
            for (var a0 = 0; a0 < n0; a0++)
            {
                for (var a1 = 0; a1 < n1; a1++)
                {
                    for (var a2 = 0; a2 < n2; a2++)
                    {
                        var x0 = q0 + (a0 * p.D0);
                        var x1 = q1 + (a1 * p.D1);
                        var x2 = q2 + (a2 * p.D2);
                        var slot = p.SlotOfKey(x0, x1, x2, y0, y1, y2);
                        var tokenRow = ((b * p.Tokens) + p.Token(x0, x1, x2)) * p.Heads;
                        for (var h = hk * group; h < (hk + 1) * group; h++)
                        {
                            var row = tokenRow + h;
                            if (c < p.HeadDim)
                            {
                                accK += scoreGrad[(row * p.WindowSize) + slot] * TS.Load(query[(row * p.HeadDim) + c]);
                            }

                            if (c < p.ValueDim)
                            {
                                accV += probs[(row * p.WindowSize) + slot] * TS.Load(outputGrad[(row * p.ValueDim) + c]);
                            }
                        }
                    }
                }
            }

            if (c < p.HeadDim)
            {
                keyGrad[(kvRow * p.HeadDim) + c] = TS.Store(accK * p.Scale);
            }

            if (c < p.ValueDim)
            {
                valueGrad[(kvRow * p.ValueDim) + c] = TS.Store(accV);
            }
        }
    }

    /// <summary>d(additional K) and d(additional V): every query of the batch entry sees every additional token.</summary>
    public static void AdditionalKeyValueGrad<T, TS>(
        Index1D index, ProblemParams p, long count, int stride, ArrayView<T> query, ArrayView<T> outputGrad,
        ArrayView<float> probs, ArrayView<float> scoreGrad, ArrayView<T> keyGrad, ArrayView<T> valueGrad)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        var channels = p.HeadDim > p.ValueDim ? p.HeadDim : p.ValueDim;
        var group = p.Heads / p.KvHeads;
        for (long e = index.X; e < count; e += stride)
        {
            var c = (int)(e % channels);
            var kvRow = e / channels; // (b, m, kv head)
            var hk = (int)(kvRow % p.KvHeads);
            var m = (int)(kvRow / p.KvHeads % p.AdditionalTokens);
            var b = kvRow / p.KvHeads / p.AdditionalTokens;
            var accK = 0f;
            var accV = 0f;
            for (long t = 0; t < p.Tokens; t++)
            {
                for (var h = hk * group; h < (hk + 1) * group; h++)
                {
                    var row = (((b * p.Tokens) + t) * p.Heads) + h;
                    var at = (row * p.AdditionalTokens) + m;
                    if (c < p.HeadDim)
                    {
                        accK += scoreGrad[at] * TS.Load(query[(row * p.HeadDim) + c]);
                    }

                    if (c < p.ValueDim)
                    {
                        accV += probs[at] * TS.Load(outputGrad[(row * p.ValueDim) + c]);
                    }
                }
            }

            if (c < p.HeadDim)
            {
                keyGrad[(kvRow * p.HeadDim) + c] = TS.Store(accK * p.Scale);
            }

            if (c < p.ValueDim)
            {
                valueGrad[(kvRow * p.ValueDim) + c] = TS.Store(accV);
            }
        }
    }

    /// <summary>The (b, token, kv head) row of the key in window slot <paramref name="slot"/> of query row <paramref name="row"/>, or −1.</summary>
    private static long KeyRowOfSlot(ProblemParams p, long row, int slot)
    {
        var h = (int)(row % p.Heads);
        var bt = row / p.Heads;
        var b = bt / p.Tokens;
        p.Coordinates(bt % p.Tokens, out var x0, out var x1, out var x2);
        var keyToken = p.KeyOfSlot(x0, x1, x2, slot);
        return keyToken < 0 ? -1 : (((b * p.Tokens) + keyToken) * p.KvHeads) + p.KvHeadOf(h);
    }

    /// <summary>The (b, m, kv head) row of additional token <paramref name="m"/> for query row <paramref name="row"/>.</summary>
    private static long AdditionalRow(ProblemParams p, long row, int m)
    {
        var h = (int)(row % p.Heads);
        var b = row / p.Heads / p.Tokens;
        return (((b * p.AdditionalTokens) + m) * p.KvHeads) + p.KvHeadOf(h);
    }

    private static float AdditionalScore<T, TS>(ProblemParams p, long row, int m, ArrayView<T> query, ArrayView<T> additionalKey)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        var keyRow = AdditionalRow(p, row, m);
        var acc = 0f;
        for (var c = 0; c < p.HeadDim; c++)
        {
            acc += TS.Load(query[(row * p.HeadDim) + c]) * TS.Load(additionalKey[(keyRow * p.HeadDim) + c]);
        }

        return acc * p.Scale;
    }
}
