namespace Natten.Reference;

public static partial class ReferenceAttention
{
    /// <summary>Analytic backward of <see cref="Neighborhood"/> for the upstream gradient <paramref name="outputGrad"/>.</summary>
    public static AttentionGradients NeighborhoodBackward(
        NeighborhoodProblem problem, double[] query, double[] key, double[] value, double[] outputGrad,
        double[]? additionalKey = null, double[]? additionalValue = null)
    {
        ArgumentNullException.ThrowIfNull(problem);
        return MaskedBackward(problem.Dims, query, key, value, outputGrad, problem.Allows, additionalKey, additionalValue);
    }

    /// <summary>
    /// Analytic backward of <see cref="Masked"/>. With P the softmax probabilities of a query row,
    /// dP_j = dO·v_j, D = Σ_j P_j dP_j, dS_j = P_j (dP_j − D):
    /// dV_j += P_j dO, dQ += scale Σ_j dS_j k_j, dK_j += scale dS_j q. Gradients of kv heads shared by
    /// several query heads (GQA) are summed over those heads.
    /// </summary>
    public static AttentionGradients MaskedBackward(
        AttentionDims dims, double[] query, double[] key, double[] value, double[] outputGrad, Func<int, int, bool> allows,
        double[]? additionalKey = null, double[]? additionalValue = null)
    {
        ArgumentNullException.ThrowIfNull(allows);
        ArgumentNullException.ThrowIfNull(outputGrad);
        CheckLengths(dims, query, key, value, additionalKey, additionalValue);
        var dq = new double[query.Length];
        var dk = new double[key.Length];
        var dv = new double[value.Length];
        var dak = new double[additionalKey?.Length ?? 0];
        var dav = new double[additionalValue?.Length ?? 0];
        for (var b = 0; b < dims.Batch; b++)
        {
            for (var t = 0; t < dims.Tokens; t++)
            {
                for (var h = 0; h < dims.Heads; h++)
                {
                    var keys = VisibleKeys(dims, query, key, value, additionalKey, additionalValue, allows, b, t, h);
                    if (keys.Count == 0)
                    {
                        continue; // output is the constant 0: no gradient flows.
                    }

                    var max = double.NegativeInfinity;
                    foreach (var k in keys)
                    {
                        max = Math.Max(max, k.Score);
                    }

                    var shift = double.IsFinite(max) ? max : 0.0;
                    var sum = 0.0;
                    foreach (var k in keys)
                    {
                        sum += Math.Exp(k.Score - shift);
                    }

                    var o = dims.OutputOffset(b, t, h);
                    var q = dims.QueryOffset(b, t, h);
                    var p = new double[keys.Count];
                    var dp = new double[keys.Count];
                    var rowTerm = 0.0;
                    for (var j = 0; j < keys.Count; j++)
                    {
                        p[j] = Math.Exp(keys[j].Score - shift) / sum;
                        dp[j] = Dot(outputGrad, o, keys[j].Value, keys[j].ValueOffset, dims.ValueDim);
                        rowTerm += p[j] * dp[j];
                    }

                    for (var j = 0; j < keys.Count; j++)
                    {
                        var k = keys[j];
                        var ds = p[j] * (dp[j] - rowTerm);
                        var dKey = k.IsAdditional ? dak : dk;
                        var dValue = k.IsAdditional ? dav : dv;
                        for (var c = 0; c < dims.ValueDim; c++)
                        {
                            dValue[k.ValueOffset + c] += p[j] * outputGrad[o + c];
                        }

                        for (var c = 0; c < dims.HeadDim; c++)
                        {
                            dq[q + c] += dims.Scale * ds * k.Key[k.KeyOffset + c];
                            dKey[k.KeyOffset + c] += dims.Scale * ds * query[q + c];
                        }
                    }
                }
            }
        }

        return new AttentionGradients(dq, dk, dv, dak, dav);
    }
}
