using Natten.Reference;
using Natten.Tests.Support;

namespace Natten.Tests.Oracle;

/// <summary>The analytic backward against central finite differences of the forward, on tiny problems.</summary>
public sealed class ReferenceBackwardTests
{
    public static IEnumerable<TestCaseData> Problems()
    {
        yield return new TestCaseData(ReferenceSpecialCaseTests.Problem([5], [3], [false], heads: 2, kvHeads: 1, headDim: 3, valueDim: 2, additional: 2, batch: 1))
            .SetName("{m}(1D K3, GQA 2/1, D3 Dv2, +2 kv)");
        yield return new TestCaseData(ReferenceSpecialCaseTests.Problem([6], [2], [true], heads: 1, kvHeads: 1, headDim: 2, valueDim: 2, stride: [2], dilation: [2], scale: 0.8, batch: 2))
            .SetName("{m}(1D even K, causal, stride 2, dilation 2, scale 0.8)");
        yield return new TestCaseData(ReferenceSpecialCaseTests.Problem([3, 4], [2, 3], [true, false], heads: 2, kvHeads: 2, headDim: 2, valueDim: 3, stride: [1, 2], batch: 1))
            .SetName("{m}(2D causal x non-causal, stride 1x2)");
        yield return new TestCaseData(ReferenceSpecialCaseTests.Problem([2, 3, 4], [2, 2, 2], [false, true, false], heads: 3, kvHeads: 1, headDim: 2, valueDim: 2, dilation: [1, 1, 2], additional: 1, batch: 1))
            .SetName("{m}(3D MQA 3/1, dilation 1x1x2, +1 kv)");
    }

    [TestCaseSource(nameof(Problems))]
    public void AnalyticGradientsMatchFiniteDifferences(NeighborhoodProblem problem)
    {
        var rng = new Random(problem.Tokens * 31 + problem.Heads);
        var (q, k, v) = ReferenceSpecialCaseTests.Inputs(problem, seed: 17);
        var nAdd = problem.AdditionalTokens;
        var ak = TestData.Doubles(rng, (long)problem.Batch * nAdd * problem.KvHeads * problem.HeadDim);
        var av = TestData.Doubles(rng, (long)problem.Batch * nAdd * problem.KvHeads * problem.ValueDim);
        var outputGrad = TestData.Doubles(rng, (long)problem.Batch * problem.Tokens * problem.Heads * problem.ValueDim);

        var grads = ReferenceAttention.NeighborhoodBackward(problem, q, k, v, outputGrad, ak, av);

        // Loss = Σ outputGrad ∘ O, so dLoss/dx = the backward of outputGrad.
        double Loss() => ReferenceAttention.Neighborhood(problem, q, k, v, ak, av).Output.Zip(outputGrad, (o, g) => o * g).Sum();

        AssertMatchesNumeric(q, grads.Query, Loss, "dQ");
        AssertMatchesNumeric(k, grads.Key, Loss, "dK");
        AssertMatchesNumeric(v, grads.Value, Loss, "dV");
        AssertMatchesNumeric(ak, grads.AdditionalKey, Loss, "d(additional K)");
        AssertMatchesNumeric(av, grads.AdditionalValue, Loss, "d(additional V)");
    }

    [Test]
    public void GradientsAreNotTriviallyZero()
    {
        var problem = ReferenceSpecialCaseTests.Problem([5], [3], [false], heads: 1, kvHeads: 1, headDim: 2, valueDim: 2, batch: 1);
        var (q, k, v) = ReferenceSpecialCaseTests.Inputs(problem, seed: 2);
        var grads = ReferenceAttention.NeighborhoodBackward(problem, q, k, v, TestData.Doubles(new Random(3), 10));
        Assert.That(grads.Query.Count(x => Math.Abs(x) > 1e-6), Is.GreaterThan(5));
        Assert.That(grads.Key.Count(x => Math.Abs(x) > 1e-6), Is.GreaterThan(5));
        Assert.That(grads.Value.Count(x => Math.Abs(x) > 1e-6), Is.GreaterThan(5));
    }

    private static void AssertMatchesNumeric(double[] x, double[] analytic, Func<double> loss, string what)
    {
        Assert.That(analytic, Has.Length.EqualTo(x.Length), what);
        const double h = 1e-5;
        for (var i = 0; i < x.Length; i++)
        {
            var saved = x[i];
            x[i] = saved + h;
            var up = loss();
            x[i] = saved - h;
            var down = loss();
            x[i] = saved;
            var numeric = (up - down) / (2 * h);
            Assert.That(analytic[i], Is.EqualTo(numeric).Within(1e-7 + (1e-6 * Math.Abs(numeric))), $"{what}[{i}]");
        }
    }
}
