using Natten.Reference;

namespace Natten.Tests.Support;

/// <summary>
/// The "plain implementation in the same precision" of FlashAttention's tolerance rule: the
/// straightforward per-query loop in float32 arithmetic (inputs already in their storage precision,
/// output rounded to the storage type by the caller). Its error against the double Reference sets
/// the scale a kernel's error is judged on.
/// </summary>
internal static class PlainAttention
{
    public static (float[] Output, float[] Lse) Forward(NeighborhoodProblem p, float[] q, float[] k, float[] v, float[]? ak = null, float[]? av = null)
    {
        var n = p.Tokens;
        var group = p.Heads / p.KvHeads;
        var scale = (float)(p.Scale ?? 1.0 / Math.Sqrt(p.HeadDim));
        var output = new float[(long)p.Batch * n * p.Heads * p.ValueDim];
        var lse = new float[(long)p.Batch * n * p.Heads];
        var scores = new List<(float Score, float[] V, long Offset)>();
        for (var b = 0; b < p.Batch; b++)
        {
            for (var t = 0; t < n; t++)
            {
                for (var h = 0; h < p.Heads; h++)
                {
                    scores.Clear();
                    var hk = h / group;
                    var qo = (((long)b * n + t) * p.Heads + h) * p.HeadDim;
                    for (var j = 0; j < n; j++)
                    {
                        if (p.Allows(t, j))
                        {
                            var ko = (((long)b * n + j) * p.KvHeads + hk) * p.HeadDim;
                            scores.Add((scale * Dot(q, qo, k, ko, p.HeadDim), v, (((long)b * n + j) * p.KvHeads + hk) * p.ValueDim));
                        }
                    }

                    for (var m = 0; m < p.AdditionalTokens; m++)
                    {
                        var ko = (((long)b * p.AdditionalTokens + m) * p.KvHeads + hk) * p.HeadDim;
                        scores.Add((scale * Dot(q, qo, ak!, ko, p.HeadDim), av!, (((long)b * p.AdditionalTokens + m) * p.KvHeads + hk) * p.ValueDim));
                    }

                    var max = scores.Max(s => s.Score);
                    var sum = 0f;
                    foreach (var s in scores)
                    {
                        sum += MathF.Exp(s.Score - max);
                    }

                    var row = ((long)b * n + t) * p.Heads + h;
                    foreach (var s in scores)
                    {
                        var weight = MathF.Exp(s.Score - max) / sum;
                        for (var c = 0; c < p.ValueDim; c++)
                        {
                            output[(row * p.ValueDim) + c] += weight * s.V[s.Offset + c];
                        }
                    }

                    lse[row] = max + MathF.Log(sum);
                }
            }
        }

        return (output, lse);
    }

    /// <summary>
    /// The plain backward in float32 (no additional tokens): per query row the window's P from its own scores,
    /// dP = dO·V, D = Σ P·dP, dS = P (dP − D); dQ = scale Σ dS·K, dK += scale dS·Q, dV += P·dO, summed in row order.
    /// </summary>
    public static (float[] Query, float[] Key, float[] Value) Backward(NeighborhoodProblem p, float[] q, float[] k, float[] v, float[] dO)
    {
        if (p.AdditionalTokens != 0)
        {
            throw new ArgumentException("the plain backward takes no additional tokens", nameof(p));
        }

        var n = p.Tokens;
        var group = p.Heads / p.KvHeads;
        var scale = (float)(p.Scale ?? 1.0 / Math.Sqrt(p.HeadDim));
        var (dq, dk, dv) = (new float[q.Length], new float[k.Length], new float[v.Length]);
        var keys = new List<(int Key, float Score)>();
        for (var b = 0; b < p.Batch; b++)
        {
            for (var t = 0; t < n; t++)
            {
                for (var h = 0; h < p.Heads; h++)
                {
                    keys.Clear();
                    var hk = h / group;
                    var qo = (((long)b * n + t) * p.Heads + h) * p.HeadDim;
                    var oo = (((long)b * n + t) * p.Heads + h) * p.ValueDim;
                    for (var j = 0; j < n; j++)
                    {
                        if (p.Allows(t, j))
                        {
                            keys.Add((j, scale * Dot(q, qo, k, (((long)b * n + j) * p.KvHeads + hk) * p.HeadDim, p.HeadDim)));
                        }
                    }

                    var max = keys.Max(x => x.Score);
                    var sum = 0f;
                    foreach (var x in keys)
                    {
                        sum += MathF.Exp(x.Score - max);
                    }

                    var weights = keys.Select(x => MathF.Exp(x.Score - max) / sum).ToArray();
                    var dp = keys.Select(x => Dot(dO, oo, v, (((long)b * n + x.Key) * p.KvHeads + hk) * p.ValueDim, p.ValueDim)).ToArray();
                    var rowTerm = 0f;
                    for (var i = 0; i < keys.Count; i++)
                    {
                        rowTerm += weights[i] * dp[i];
                    }

                    for (var i = 0; i < keys.Count; i++)
                    {
                        var ds = weights[i] * (dp[i] - rowTerm);
                        var ko = (((long)b * n + keys[i].Key) * p.KvHeads + hk) * p.HeadDim;
                        var vo = (((long)b * n + keys[i].Key) * p.KvHeads + hk) * p.ValueDim;
                        for (var c = 0; c < p.HeadDim; c++)
                        {
                            dq[qo + c] += scale * ds * k[ko + c];
                            dk[ko + c] += scale * ds * q[qo + c];
                        }

                        for (var c = 0; c < p.ValueDim; c++)
                        {
                            dv[vo + c] += weights[i] * dO[oo + c];
                        }
                    }
                }
            }
        }

        return (dq, dk, dv);
    }

    private static float Dot(float[] x, long xo, float[] y, long yo, int length)
    {
        var acc = 0f;
        for (var c = 0; c < length; c++)
        {
            acc += x[xo + c] * y[yo + c];
        }

        return acc;
    }
}
