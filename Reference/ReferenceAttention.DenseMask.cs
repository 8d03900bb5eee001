namespace Natten.Reference;

public static partial class ReferenceAttention
{
    /// <summary>
    /// Attention under a dense mask with an optional additive score bias, the oracle of every
    /// block-sparse pattern: query token <c>q</c> of batch entry <c>b</c> and query head <c>h</c> sees key
    /// token <c>k</c> iff <paramref name="allows"/>(b, h, q, k); its score is
    /// <c>scale · q·k + bias(b, h, q, k)</c>. A query that sees nothing gets output 0 and LSE −∞.
    /// </summary>
    /// <param name="dims">Sizes (query and key lengths may differ).</param>
    /// <param name="query">Q <c>[B, Nq, H, D]</c>.</param>
    /// <param name="key">K <c>[B, Nk, Hkv, D]</c>.</param>
    /// <param name="value">V <c>[B, Nk, Hkv, Dv]</c>.</param>
    /// <param name="allows">The mask as a predicate over (batch, query head, query token, key token).</param>
    /// <param name="bias">Optional additive bias over the same indices (in score units, after the scale).</param>
    public static AttentionResult DenseMasked(
        MaskedAttentionDims dims, double[] query, double[] key, double[] value,
        Func<int, int, int, int, bool> allows, Func<int, int, int, int, double>? bias = null)
    {
        ArgumentNullException.ThrowIfNull(allows);
        CheckLengths(dims, query, key, value);
        var output = new double[(long)dims.Batch * dims.QueryTokens * dims.Heads * dims.ValueDim];
        var lse = new double[(long)dims.Batch * dims.QueryTokens * dims.Heads];
        for (var b = 0; b < dims.Batch; b++)
        {
            for (var t = 0; t < dims.QueryTokens; t++)
            {
                for (var h = 0; h < dims.Heads; h++)
                {
                    var (keys, scores) = VisibleKeys(dims, query, key, allows, bias, b, t, h);
                    if (keys.Count == 0)
                    {
                        lse[dims.LseIndex(b, t, h)] = double.NegativeInfinity;
                        continue;
                    }

                    var (p, shift, sum) = Softmax(scores);
                    var o = dims.OutputOffset(b, t, h);
                    var hk = dims.KvHeadOf(h);
                    for (var j = 0; j < keys.Count; j++)
                    {
                        var vo = dims.ValueOffset(b, keys[j], hk);
                        for (var c = 0; c < dims.ValueDim; c++)
                        {
                            output[o + c] += p[j] * value[vo + c];
                        }
                    }

                    lse[dims.LseIndex(b, t, h)] = shift + Math.Log(sum);
                }
            }
        }

        return new AttentionResult(output, lse);
    }

    /// <summary>
    /// Analytic backward of <see cref="DenseMasked"/> for Q, K and V (the bias's gradient is
    /// <see cref="DenseMaskedBiasGradient"/>).
    /// With P the probabilities of a query row, dP_j = dO·v_j, D = Σ_j P_j dP_j, dS_j = P_j (dP_j − D):
    /// dV_j += P_j dO, dQ += scale Σ_j dS_j k_j, dK_j += scale dS_j q; kv-head gradients sum over their query heads.
    /// </summary>
    /// <param name="dims">Sizes.</param>
    /// <param name="query">Q.</param>
    /// <param name="key">K.</param>
    /// <param name="value">V.</param>
    /// <param name="outputGrad">dO <c>[B, Nq, H, Dv]</c>.</param>
    /// <param name="allows">The mask predicate.</param>
    /// <param name="bias">Optional additive bias.</param>
    /// <returns>dQ, dK, dV (the additional-token gradients are empty).</returns>
    public static AttentionGradients DenseMaskedBackward(
        MaskedAttentionDims dims, double[] query, double[] key, double[] value, double[] outputGrad,
        Func<int, int, int, int, bool> allows, Func<int, int, int, int, double>? bias = null)
    {
        ArgumentNullException.ThrowIfNull(allows);
        ArgumentNullException.ThrowIfNull(outputGrad);
        CheckLengths(dims, query, key, value);
        var dq = new double[query.Length];
        var dk = new double[key.Length];
        var dv = new double[value.Length];
        for (var b = 0; b < dims.Batch; b++)
        {
            for (var t = 0; t < dims.QueryTokens; t++)
            {
                for (var h = 0; h < dims.Heads; h++)
                {
                    var (keys, scores) = VisibleKeys(dims, query, key, allows, bias, b, t, h);
                    if (keys.Count == 0)
                    {
                        continue; // the output is the constant 0: no gradient flows.
                    }

                    var (p, _, _) = Softmax(scores);
                    var hk = dims.KvHeadOf(h);
                    var o = dims.OutputOffset(b, t, h);
                    var q = dims.QueryOffset(b, t, h);
                    var dp = new double[keys.Count];
                    var rowTerm = 0.0;
                    for (var j = 0; j < keys.Count; j++)
                    {
                        dp[j] = Dot(outputGrad, o, value, dims.ValueOffset(b, keys[j], hk), dims.ValueDim);
                        rowTerm += p[j] * dp[j];
                    }

                    for (var j = 0; j < keys.Count; j++)
                    {
                        var ds = p[j] * (dp[j] - rowTerm);
                        var ko = dims.KeyOffset(b, keys[j], hk);
                        var vo = dims.ValueOffset(b, keys[j], hk);
                        for (var c = 0; c < dims.ValueDim; c++)
                        {
                            dv[vo + c] += p[j] * outputGrad[o + c];
                        }

                        for (var c = 0; c < dims.HeadDim; c++)
                        {
                            dq[q + c] += dims.Scale * ds * key[ko + c];
                            dk[ko + c] += dims.Scale * ds * query[q + c];
                        }
                    }
                }
            }
        }

        return new AttentionGradients(dq, dk, dv, [], []);
    }

    /// <summary>The keys query (b, t, h) sees, in key order, and their scores.</summary>
    private static (List<int> Keys, List<double> Scores) VisibleKeys(
        MaskedAttentionDims dims, double[] query, double[] key, Func<int, int, int, int, bool> allows,
        Func<int, int, int, int, double>? bias, int b, int t, int h)
    {
        var keys = new List<int>();
        var scores = new List<double>();
        var hk = dims.KvHeadOf(h);
        var q = dims.QueryOffset(b, t, h);
        for (var j = 0; j < dims.KeyTokens; j++)
        {
            if (allows(b, h, t, j))
            {
                keys.Add(j);
                scores.Add((dims.Scale * Dot(query, q, key, dims.KeyOffset(b, j, hk), dims.HeadDim)) + (bias?.Invoke(b, h, t, j) ?? 0.0));
            }
        }

        return (keys, scores);
    }

    /// <summary>Probabilities of one row, shifted by its max (finite when the max is), and the shift and sum.</summary>
    private static (double[] P, double Shift, double Sum) Softmax(List<double> scores)
    {
        var max = double.NegativeInfinity;
        foreach (var s in scores)
        {
            max = Math.Max(max, s);
        }

        var shift = double.IsFinite(max) ? max : 0.0;
        var sum = 0.0;
        foreach (var s in scores)
        {
            sum += Math.Exp(s - shift);
        }

        var p = new double[scores.Count];
        for (var j = 0; j < p.Length; j++)
        {
            p[j] = Math.Exp(scores[j] - shift) / sum;
        }

        return (p, shift, sum);
    }

    private static void CheckLengths(MaskedAttentionDims dims, double[] query, double[] key, double[] value)
    {
        ArgumentNullException.ThrowIfNull(dims);
        ArgumentNullException.ThrowIfNull(query);
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        Check(query.LongLength, (long)dims.Batch * dims.QueryTokens * dims.Heads * dims.HeadDim, nameof(query));
        Check(key.LongLength, (long)dims.Batch * dims.KeyTokens * dims.KvHeads * dims.HeadDim, nameof(key));
        Check(value.LongLength, (long)dims.Batch * dims.KeyTokens * dims.KvHeads * dims.ValueDim, nameof(value));

        static void Check(long actual, long expected, string name)
        {
            if (actual != expected)
            {
                throw new ArgumentException($"{name} has {actual} elements, expected {expected}.", name);
            }
        }
    }
}
