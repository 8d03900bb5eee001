using Natten.Reference;
using Natten.Tests.Support;

namespace Natten.Tests.Oracle;

/// <summary>The special cases SEMANTICS.md says must come out of the same rule, on the full attention.</summary>
public sealed class ReferenceSpecialCaseTests
{
    [TestCase(1, 7, 0, 0, TestName = "K = n, 1D")]
    [TestCase(2, 3, 5, 0, TestName = "K = n, 2D")]
    [TestCase(3, 2, 3, 4, TestName = "K = n, 3D")]
    public void FullKernelNonCausalEqualsDenseAttention(int rank, int x, int y, int z)
    {
        int[] spatial = rank switch { 1 => [x], 2 => [x, y], _ => [x, y, z] };
        var problem = Problem(spatial, kernel: spatial, causal: new bool[rank], heads: 4, kvHeads: 2, headDim: 5, valueDim: 3);
        var (q, k, v) = Inputs(problem, seed: rank);
        var na = ReferenceAttention.Neighborhood(problem, q, k, v);
        var dense = ReferenceAttention.Dense(problem.Dims, q, k, v, causal: false);
        Assert.That(TestData.MaxAbsDiff(dense.Output, na.Output), Is.LessThan(1e-14));
        Assert.That(TestData.MaxAbsDiff(dense.LogSumExp, na.LogSumExp), Is.LessThan(1e-14));
    }

    [Test]
    public void OneDimensionalCausalFullKernelEqualsCausalAttention()
    {
        var problem = Problem([9], kernel: [9], causal: [true], heads: 2, kvHeads: 1, headDim: 4, valueDim: 4);
        var (q, k, v) = Inputs(problem, seed: 11);
        var na = ReferenceAttention.Neighborhood(problem, q, k, v);
        var causal = ReferenceAttention.Dense(problem.Dims, q, k, v, causal: true);
        Assert.That(TestData.MaxAbsDiff(causal.Output, na.Output), Is.LessThan(1e-14));
        Assert.That(TestData.MaxAbsDiff(causal.LogSumExp, na.LogSumExp), Is.LessThan(1e-14));
    }

    [Test]
    public void AdditionalTokensEqualMergeOfNeighborhoodAndDenseOverTheExtraTokens()
    {
        var problem = Problem([4, 5], kernel: [3, 2], causal: [false, true], heads: 2, kvHeads: 1, headDim: 3, valueDim: 2, additional: 3);
        var rng = new Random(5);
        var (q, k, v) = Inputs(problem, seed: 5);
        var ak = TestData.Doubles(rng, (long)problem.Batch * 3 * problem.KvHeads * problem.HeadDim);
        var av = TestData.Doubles(rng, (long)problem.Batch * 3 * problem.KvHeads * problem.ValueDim);

        var fused = ReferenceAttention.Neighborhood(problem, q, k, v, ak, av);

        var noExtra = new NeighborhoodProblem
        {
            Batch = problem.Batch, Spatial = problem.Spatial, Heads = problem.Heads, KvHeads = problem.KvHeads,
            HeadDim = problem.HeadDim, ValueDim = problem.ValueDim, KernelSize = problem.KernelSize, Stride = problem.Stride,
            Dilation = problem.Dilation, Causal = problem.Causal,
        };
        var na = ReferenceAttention.Neighborhood(noExtra, q, k, v);

        // Attention over only the extra tokens: a mask that allows no regular key.
        var extraOnly = ReferenceAttention.Masked(problem.Dims, q, k, v, static (_, _) => false, ak, av);
        var merged = ReferenceAttention.Merge(na.Output, na.LogSumExp, extraOnly.Output, extraOnly.LogSumExp, problem.ValueDim);

        Assert.That(TestData.MaxAbsDiff(fused.Output, merged.Output), Is.LessThan(1e-13));
        Assert.That(TestData.MaxAbsDiff(fused.LogSumExp, merged.LogSumExp), Is.LessThan(1e-13));
    }

    [Test]
    public void LseIsTheLogOfTheSumOfExponentiatedScaledScores()
    {
        var problem = Problem([6], kernel: [3], causal: [false], heads: 1, kvHeads: 1, headDim: 2, valueDim: 2, scale: 0.7);
        var (q, k, v) = Inputs(problem, seed: 3);
        var result = ReferenceAttention.Neighborhood(problem, q, k, v);

        // Query 0 sees keys 0, 1, 2 (window shifted inward at the border).
        var sum = 0.0;
        for (var j = 0; j < 3; j++)
        {
            sum += Math.Exp(0.7 * ((q[0] * k[2 * j]) + (q[1] * k[(2 * j) + 1])));
        }

        Assert.That(result.LogSumExp[0], Is.EqualTo(Math.Log(sum)).Within(1e-14));
    }

    [Test]
    public void RowWithNoAllowedKeyHasZeroOutputAndMinusInfinityLse()
    {
        var dims = new AttentionDims(1, 3, 1, 1, 2, 2, 1.0);
        var rng = new Random(1);
        var result = ReferenceAttention.Masked(dims, TestData.Doubles(rng, 6), TestData.Doubles(rng, 6), TestData.Doubles(rng, 6), static (q, _) => q != 1);
        Assert.That(result.Output[2..4], Is.All.EqualTo(0.0));
        Assert.That(result.LogSumExp[1], Is.EqualTo(double.NegativeInfinity));
        Assert.That(result.Output, Has.None.NaN);
    }

    [Test]
    public void HugeLogitsStayFinite()
    {
        var problem = Problem([5], kernel: [3], causal: [false], heads: 1, kvHeads: 1, headDim: 1, valueDim: 1, scale: 1.0, batch: 1);
        double[] q = [100, -100, 100, -100, 100];
        double[] k = [100, 100, -100, 100, 100]; // scores of ±1e4
        double[] v = [1, 2, 3, 4, 5];
        var result = ReferenceAttention.Neighborhood(problem, q, k, v);
        Assert.That(result.Output.All(double.IsFinite), Is.True);
        Assert.That(result.LogSumExp.All(double.IsFinite), Is.True);

        // Query 0 sees keys 0..2 with scores 1e4, 1e4, -1e4: the average of v0 and v1.
        Assert.That(result.Output[0], Is.EqualTo(1.5).Within(1e-12));
        Assert.That(result.LogSumExp[0], Is.EqualTo(1e4 + Math.Log(2)).Within(1e-9));
    }

    [Test]
    public void NaNInOneQueryAffectsOnlyThatQuerysOutput()
    {
        var problem = Problem([6], kernel: [3], causal: [false], heads: 1, kvHeads: 1, headDim: 2, valueDim: 2);
        var (q, k, v) = Inputs(problem, seed: 8);
        q[2 * 4] = double.NaN;
        var result = ReferenceAttention.Neighborhood(problem, q, k, v);
        for (var t = 0; t < 6; t++)
        {
            Assert.That(double.IsNaN(result.Output[2 * t]), Is.EqualTo(t == 4), $"token {t}");
        }
    }

    internal static NeighborhoodProblem Problem(
        int[] spatial, int[] kernel, bool[] causal, int heads, int kvHeads, int headDim, int valueDim,
        int additional = 0, double? scale = null, int[]? stride = null, int[]? dilation = null, int batch = 2) => new()
    {
        Batch = batch,
        Spatial = spatial,
        Heads = heads,
        KvHeads = kvHeads,
        HeadDim = headDim,
        ValueDim = valueDim,
        KernelSize = kernel,
        Stride = stride ?? Enumerable.Repeat(1, spatial.Length).ToArray(),
        Dilation = dilation ?? Enumerable.Repeat(1, spatial.Length).ToArray(),
        Causal = causal,
        Scale = scale,
        AdditionalTokens = additional,
    };

    internal static (double[] Q, double[] K, double[] V) Inputs(NeighborhoodProblem p, int seed)
    {
        var rng = new Random(seed);
        var rows = (long)p.Batch * p.Tokens;
        return (TestData.Doubles(rng, rows * p.Heads * p.HeadDim),
                TestData.Doubles(rng, rows * p.KvHeads * p.HeadDim),
                TestData.Doubles(rng, rows * p.KvHeads * p.ValueDim));
    }
}
