using Natten.Reference;
using Natten.Tests.Support;

namespace Natten.Tests.Oracle;

/// <summary>The Reference's dense-mask-plus-bias oracle (the block-sparse patterns' oracle) against the masked oracle and finite differences.</summary>
public sealed class DenseMaskedReferenceTests
{
    [Test]
    public void WithoutBiasItEqualsTheMaskedOracleWhenLengthsAgree()
    {
        var rng = new Random(4);
        var dims = new AttentionDims(2, 9, 4, 2, 3, 5, 0.7);
        var masked = new MaskedAttentionDims(2, 9, 9, 4, 2, 3, 5, 0.7);
        var (q, k, v) = (TestData.Doubles(rng, 2 * 9 * 4 * 3), TestData.Doubles(rng, 2 * 9 * 2 * 3), TestData.Doubles(rng, 2 * 9 * 2 * 5));
        static bool Allows(int q, int k) => (q + (2 * k)) % 3 != 0 && q != 4;
        var expected = ReferenceAttention.Masked(dims, q, k, v, Allows);
        var actual = ReferenceAttention.DenseMasked(masked, q, k, v, (_, _, qi, ki) => Allows(qi, ki));
        Assert.That(actual.Output, Is.EqualTo(expected.Output).AsCollection.Within(1e-12));
        Assert.That(actual.LogSumExp, Is.EqualTo(expected.LogSumExp).AsCollection.Within(1e-12));
        Assert.That(actual.LogSumExp.Count(double.IsNegativeInfinity), Is.EqualTo(2 * 4), "query 4 sees nothing in every batch entry and head");
    }

    [Test]
    public void GradientsWithBiasMatchFiniteDifferences()
    {
        var rng = new Random(8);
        var dims = new MaskedAttentionDims(1, 5, 6, 2, 1, 3, 2, 0.9);
        var (q, k, v) = (TestData.Doubles(rng, 5 * 2 * 3), TestData.Doubles(rng, 6 * 3), TestData.Doubles(rng, 6 * 2));
        var outputGrad = TestData.Doubles(rng, 5 * 2 * 2);
        static bool Allows(int b, int h, int q, int k) => (k + h) % 4 != 1 && !(q == 2 && h == 1);
        static double Bias(int b, int h, int q, int k) => 0.3 * (h + 1) * Math.Sin(q - k);
        var grads = ReferenceAttention.DenseMaskedBackward(dims, q, k, v, outputGrad, Allows, Bias);
        double Loss() => ReferenceAttention.DenseMasked(dims, q, k, v, Allows, Bias).Output.Zip(outputGrad, (o, g) => o * g).Sum();
        foreach (var (x, analytic, what) in new[] { (q, grads.Query, "dQ"), (k, grads.Key, "dK"), (v, grads.Value, "dV") })
        {
            for (var i = 0; i < x.Length; i++)
            {
                var saved = x[i];
                x[i] = saved + 1e-5;
                var up = Loss();
                x[i] = saved - 1e-5;
                var down = Loss();
                x[i] = saved;
                var numeric = (up - down) / 2e-5;
                Assert.That(analytic[i], Is.EqualTo(numeric).Within(1e-7 + (1e-6 * Math.Abs(numeric))), $"{what}[{i}]");
            }
        }
    }
}
