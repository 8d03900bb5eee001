namespace Natten.Reference;

public static partial class ReferenceAttention
{
    /// <summary>
    /// Gradient of <c>L = Σ outputGrad ∘ O</c> with respect to the additive score bias of
    /// <see cref="DenseMasked"/>, for a bias whose pair (b, h, q, k) reads parameter
    /// <paramref name="biasIndex"/>(b, h, q, k) (−1: none). The score gradient of an allowed pair is
    /// <c>dS = P (dP − D)</c> with <c>dP = dO·v</c> and <c>D = Σ_j P_j dP_j</c> (= dO·O); a parameter's gradient is
    /// the sum of dS over the allowed pairs that read it. Masked-out pairs and rows with no allowed key
    /// contribute nothing.
    /// </summary>
    /// <param name="dims">Sizes.</param>
    /// <param name="query">Q.</param>
    /// <param name="key">K.</param>
    /// <param name="value">V.</param>
    /// <param name="outputGrad">dO <c>[B, Nq, H, Dv]</c>.</param>
    /// <param name="allows">The mask predicate.</param>
    /// <param name="bias">The bias values over (batch, head, query, key), as in <see cref="DenseMasked"/>.</param>
    /// <param name="biasIndex">Which bias parameter a pair reads, or −1.</param>
    /// <param name="biasLength">Number of bias parameters.</param>
    /// <returns>d(bias), <paramref name="biasLength"/> values.</returns>
    public static double[] DenseMaskedBiasGradient(
        MaskedAttentionDims dims, double[] query, double[] key, double[] value, double[] outputGrad,
        Func<int, int, int, int, bool> allows, Func<int, int, int, int, double> bias, Func<int, int, int, int, long> biasIndex, long biasLength)
    {
        ArgumentNullException.ThrowIfNull(allows);
        ArgumentNullException.ThrowIfNull(bias);
        ArgumentNullException.ThrowIfNull(biasIndex);
        ArgumentNullException.ThrowIfNull(outputGrad);
        CheckLengths(dims, query, key, value);
        var gradient = new double[biasLength];
        for (var b = 0; b < dims.Batch; b++)
        {
            for (var t = 0; t < dims.QueryTokens; t++)
            {
                for (var h = 0; h < dims.Heads; h++)
                {
                    var (keys, scores) = VisibleKeys(dims, query, key, allows, bias, b, t, h);
                    if (keys.Count == 0)
                    {
                        continue;
                    }

                    var (p, _, _) = Softmax(scores);
                    var hk = dims.KvHeadOf(h);
                    var o = dims.OutputOffset(b, t, h);
                    var dp = new double[keys.Count];
                    var rowTerm = 0.0;
                    for (var j = 0; j < keys.Count; j++)
                    {
                        dp[j] = Dot(outputGrad, o, value, dims.ValueOffset(b, keys[j], hk), dims.ValueDim);
                        rowTerm += p[j] * dp[j];
                    }

                    for (var j = 0; j < keys.Count; j++)
                    {
                        var index = biasIndex(b, h, t, keys[j]);
                        if (index >= 0)
                        {
                            gradient[index] += p[j] * (dp[j] - rowTerm);
                        }
                    }
                }
            }
        }

        return gradient;
    }
}
