namespace Natten.Reference;

/// <summary>
/// Attention in double precision, one (query, key) pair at a time: a key contributes iff the
/// mask predicate allows it (additional tokens are always allowed). No tiling, no shortcuts.
/// </summary>
public static partial class ReferenceAttention
{
    /// <summary>Neighborhood attention forward (docs/SEMANTICS.md), with optional additional K/V.</summary>
    public static AttentionResult Neighborhood(
        NeighborhoodProblem problem, double[] query, double[] key, double[] value,
        double[]? additionalKey = null, double[]? additionalValue = null)
    {
        ArgumentNullException.ThrowIfNull(problem);
        return Masked(problem.Dims, query, key, value, problem.Allows, additionalKey, additionalValue);
    }

    /// <summary>Dense self-attention over all tokens (row-major flattened), optionally causal.</summary>
    public static AttentionResult Dense(
        AttentionDims dims, double[] query, double[] key, double[] value, bool causal,
        double[]? additionalKey = null, double[]? additionalValue = null)
        => Masked(dims, query, key, value, causal ? static (q, k) => k <= q : static (_, _) => true, additionalKey, additionalValue);

    /// <summary>
    /// Attention where query token <c>q</c> sees key token <c>k</c> iff <paramref name="allows"/>(q, k),
    /// plus every additional token. A query that sees nothing gets output 0 and LSE −∞.
    /// </summary>
    public static AttentionResult Masked(
        AttentionDims dims, double[] query, double[] key, double[] value, Func<int, int, bool> allows,
        double[]? additionalKey = null, double[]? additionalValue = null)
    {
        ArgumentNullException.ThrowIfNull(allows);
        CheckLengths(dims, query, key, value, additionalKey, additionalValue);
        var output = new double[(long)dims.Batch * dims.Tokens * dims.Heads * dims.ValueDim];
        var lse = new double[(long)dims.Batch * dims.Tokens * dims.Heads];
        for (var b = 0; b < dims.Batch; b++)
        {
            for (var t = 0; t < dims.Tokens; t++)
            {
                for (var h = 0; h < dims.Heads; h++)
                {
                    var keys = VisibleKeys(dims, query, key, value, additionalKey, additionalValue, allows, b, t, h);
                    var o = dims.OutputOffset(b, t, h);
                    if (keys.Count == 0)
                    {
                        lse[dims.LseIndex(b, t, h)] = double.NegativeInfinity;
                        continue;
                    }

                    var max = double.NegativeInfinity;
                    foreach (var k in keys)
                    {
                        max = Math.Max(max, k.Score);
                    }

                    // Shifting by the max changes nothing mathematically; it keeps exp finite for huge logits.
                    var shift = double.IsFinite(max) ? max : 0.0;
                    var sum = 0.0;
                    foreach (var k in keys)
                    {
                        sum += Math.Exp(k.Score - shift);
                    }

                    foreach (var k in keys)
                    {
                        var p = Math.Exp(k.Score - shift) / sum;
                        for (var c = 0; c < dims.ValueDim; c++)
                        {
                            output[o + c] += p * k.Value[k.ValueOffset + c];
                        }
                    }

                    lse[dims.LseIndex(b, t, h)] = shift + Math.Log(sum);
                }
            }
        }

        return new AttentionResult(output, lse);
    }

    /// <summary>
    /// Merges two partial attentions over disjoint key sets:
    /// <c>o = (e^l1 o1 + e^l2 o2) / (e^l1 + e^l2)</c>, <c>l = log(e^l1 + e^l2)</c>.
    /// Rows where both LSEs are −∞ merge to output 0 and LSE −∞.
    /// </summary>
    public static AttentionResult Merge(double[] output1, double[] lse1, double[] output2, double[] lse2, int valueDim)
    {
        ArgumentNullException.ThrowIfNull(output1);
        ArgumentNullException.ThrowIfNull(lse1);
        ArgumentNullException.ThrowIfNull(output2);
        ArgumentNullException.ThrowIfNull(lse2);
        var output = new double[output1.Length];
        var lse = new double[lse1.Length];
        for (var r = 0; r < lse1.Length; r++)
        {
            var m = Math.Max(lse1[r], lse2[r]);
            if (double.IsNegativeInfinity(m))
            {
                lse[r] = double.NegativeInfinity;
                continue;
            }

            var w1 = Math.Exp(lse1[r] - m);
            var w2 = Math.Exp(lse2[r] - m);
            for (var c = 0; c < valueDim; c++)
            {
                var i = ((long)r * valueDim) + c;
                output[i] = ((w1 * output1[i]) + (w2 * output2[i])) / (w1 + w2);
            }

            lse[r] = m + Math.Log(w1 + w2);
        }

        return new AttentionResult(output, lse);
    }

    /// <summary>One visible key: its scaled score and where its key and value rows live.</summary>
    private readonly record struct VisibleKey(
        double Score, double[] Key, long KeyOffset, double[] Value, long ValueOffset, bool IsAdditional);

    /// <summary>Every key query (b, t, h) sees, in order: the masked keys, then the additional tokens.</summary>
    private static List<VisibleKey> VisibleKeys(
        AttentionDims dims, double[] query, double[] key, double[] value,
        double[]? additionalKey, double[]? additionalValue, Func<int, int, bool> allows, int b, int t, int h)
    {
        var hk = dims.KvHeadOf(h);
        var q = dims.QueryOffset(b, t, h);
        var keys = new List<VisibleKey>();
        for (var j = 0; j < dims.Tokens; j++)
        {
            if (allows(t, j))
            {
                var k = dims.KeyOffset(b, j, hk);
                keys.Add(new VisibleKey(dims.Scale * Dot(query, q, key, k, dims.HeadDim), key, k, value, dims.ValueOffset(b, j, hk), false));
            }
        }

        for (var j = 0; j < dims.AdditionalTokens; j++)
        {
            var k = dims.AdditionalKeyOffset(b, j, hk);
            keys.Add(new VisibleKey(
                dims.Scale * Dot(query, q, additionalKey!, k, dims.HeadDim), additionalKey!, k,
                additionalValue!, dims.AdditionalValueOffset(b, j, hk), true));
        }

        return keys;
    }

    /// <summary>The oracle trusts its parameters but not array lengths: a wrong length is a test bug to report clearly.</summary>
    private static void CheckLengths(
        AttentionDims dims, double[] query, double[] key, double[] value, double[]? additionalKey, double[]? additionalValue)
    {
        ArgumentNullException.ThrowIfNull(dims);
        ArgumentNullException.ThrowIfNull(query);
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        var rows = (long)dims.Batch * dims.Tokens;
        var extra = (long)dims.Batch * dims.AdditionalTokens;
        Check(query.LongLength, rows * dims.Heads * dims.HeadDim, nameof(query));
        Check(key.LongLength, rows * dims.KvHeads * dims.HeadDim, nameof(key));
        Check(value.LongLength, rows * dims.KvHeads * dims.ValueDim, nameof(value));
        Check(additionalKey?.LongLength ?? 0, extra * dims.KvHeads * dims.HeadDim, nameof(additionalKey));
        Check(additionalValue?.LongLength ?? 0, extra * dims.KvHeads * dims.ValueDim, nameof(additionalValue));

        static void Check(long actual, long expected, string name)
        {
            if (actual != expected)
            {
                throw new ArgumentException($"{name} has {actual} elements, expected {expected}.", name);
            }
        }
    }

    private static double Dot(double[] x, long xOffset, double[] y, long yOffset, int length)
    {
        var sum = 0.0;
        for (var c = 0; c < length; c++)
        {
            sum += x[xOffset + c] * y[yOffset + c];
        }

        return sum;
    }
}
