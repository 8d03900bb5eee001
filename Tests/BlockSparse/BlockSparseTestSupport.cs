using Natten.Reference;
using Natten.Tests.Support;

namespace Natten.Tests.BlockSparse;

/// <summary>One random block-sparse problem: sizes, inputs, and the pattern as an independent predicate.</summary>
internal sealed record MaskedCase(BlockSparseShape Shape, double? Scale, float[] Query, float[] Key, float[] Value)
{
    public MaskedAttentionDims Dims(double? scale = null) => new(
        Shape.Batch, Shape.QueryTokens, Shape.KeyTokens, Shape.Heads, Shape.KvHeads, Shape.HeadDim, Shape.ValueDim,
        scale ?? Scale ?? 1.0 / Math.Sqrt(Shape.HeadDim));

    public static MaskedCase Create(Random rng, BlockSparseShape shape, double? scale = null)
        => new(
            shape, scale,
            TestData.Floats(rng, (long)shape.Batch * shape.QueryTokens * shape.Heads * shape.HeadDim),
            TestData.Floats(rng, (long)shape.Batch * shape.KeyTokens * shape.KvHeads * shape.HeadDim),
            TestData.Floats(rng, (long)shape.Batch * shape.KeyTokens * shape.KvHeads * shape.ValueDim));

    public long OutputLength => (long)Shape.Batch * Shape.QueryTokens * Shape.Heads * Shape.ValueDim;

    public long LseLength => (long)Shape.Batch * Shape.QueryTokens * Shape.Heads;
}

/// <summary>
/// The plain same-precision baseline of FlashAttention's tolerance rule for masked attention: the
/// straightforward per-query loop in float32.
/// </summary>
internal static class PlainMaskedAttention
{
    public static (float[] Output, float[] Lse) Forward(
        MaskedAttentionDims d, float[] q, float[] k, float[] v, Func<int, int, int, int, bool> allows, Func<int, int, int, int, double>? bias = null)
    {
        var output = new float[(long)d.Batch * d.QueryTokens * d.Heads * d.ValueDim];
        var lse = new float[(long)d.Batch * d.QueryTokens * d.Heads];
        var scale = (float)d.Scale;
        var scores = new List<(float Score, long Value)>();
        for (var b = 0; b < d.Batch; b++)
        {
            for (var t = 0; t < d.QueryTokens; t++)
            {
                for (var h = 0; h < d.Heads; h++)
                {
                    scores.Clear();
                    var hk = d.KvHeadOf(h);
                    var qo = d.QueryOffset(b, t, h);
                    for (var j = 0; j < d.KeyTokens; j++)
                    {
                        if (!allows(b, h, t, j))
                        {
                            continue;
                        }

                        var ko = d.KeyOffset(b, j, hk);
                        var s = 0f;
                        for (var c = 0; c < d.HeadDim; c++)
                        {
                            s += q[qo + c] * k[ko + c];
                        }

                        scores.Add((scale * s + (float)(bias?.Invoke(b, h, t, j) ?? 0.0), d.ValueOffset(b, j, hk)));
                    }

                    var row = d.LseIndex(b, t, h);
                    if (scores.Count == 0)
                    {
                        lse[row] = float.NegativeInfinity;
                        continue;
                    }

                    var max = scores.Max(x => x.Score);
                    var sum = 0f;
                    foreach (var x in scores)
                    {
                        sum += MathF.Exp(x.Score - max);
                    }

                    foreach (var x in scores)
                    {
                        var w = MathF.Exp(x.Score - max) / sum;
                        for (var c = 0; c < d.ValueDim; c++)
                        {
                            output[(row * d.ValueDim) + c] += w * v[x.Value + c];
                        }
                    }

                    lse[row] = max + MathF.Log(sum);
                }
            }
        }

        return (output, lse);
    }
}

/// <summary>Comparisons that treat −∞ LSEs (empty rows) as exact matches.</summary>
internal static class MaskedAssert
{
    /// <summary>FlashAttention's rule on the finite entries; −∞ entries must agree exactly.</summary>
    public static void Rule(double[] expected, float[] actual, float[] plain, double floor, string what)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length), what);
        var e = new List<double>();
        var a = new List<float>();
        var p = new List<float>();
        for (var i = 0; i < expected.Length; i++)
        {
            if (double.IsNegativeInfinity(expected[i]))
            {
                Assert.That(actual[i], Is.EqualTo(float.NegativeInfinity), $"{what}[{i}]: an empty row's LSE is −∞");
                continue;
            }

            e.Add(expected[i]);
            a.Add(actual[i]);
            p.Add(plain[i]);
        }

        Tolerance.AssertRule([.. e], [.. a], [.. p], floor, what);
    }

    public static void Within(double[] expected, float[] actual, double tolerance, string what)
    {
        var error = TestData.MaxAbsDiff(expected, actual);
        Assert.That(error, Is.LessThanOrEqualTo(tolerance), what);
    }
}
