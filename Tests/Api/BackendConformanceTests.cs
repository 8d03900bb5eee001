using Natten.Reference;
using Natten.Tests.Support;

namespace Natten.Tests.Api;

/// <summary>
/// Every backend, through the public API, against the Reference in double precision on a random
/// sweep of valid problems (seed in the test name). Quick by default; NATTEN_EXTENDED_SWEEP=1 runs
/// the extended count. Tolerances follow FlashAttention's rule in <see cref="Tolerance"/>.
/// </summary>
[TestFixtureSource(typeof(BackendConformanceTests), nameof(Backends))]
public sealed class BackendConformanceTests(string backend)
{
    public static IEnumerable<string> Backends => AttentionBackends.Names;

    public static IEnumerable<TestCaseData> Seeds()
        => Enumerable.Range(1, TestData.SweepCount(quick: 60, extended: 1000)).Select(s => new TestCaseData(s).SetName($"{{m}}(seed {s})"));

    [TestCaseSource(nameof(Seeds))]
    public void ForwardMatchesReference(int seed)
    {
        var problem = RandomProblem.Create(seed);
        var (q, k, v, ak, av) = Inputs(problem, seed);
        var shape = problem.Shape;
        var output = new float[q.Length / shape.HeadDim * shape.ValueDim];
        var lse = new float[q.Length / shape.HeadDim];
        var options = problem.Options with { Backend = backend };
        if (shape.AdditionalTokens > 0)
        {
            NeighborhoodAttention.Forward(q, k, v, ak, av, shape, options, output, lse);
        }
        else
        {
            NeighborhoodAttention.Forward(q, k, v, shape, options, output, lse);
        }

        var expected = ReferenceAttention.Neighborhood(
            problem.ToReference(), TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v),
            shape.AdditionalTokens > 0 ? TestData.ToDouble(ak) : null, shape.AdditionalTokens > 0 ? TestData.ToDouble(av) : null);
        Assert.That(TestData.MaxAbsDiff(expected.Output, output), Is.LessThanOrEqualTo(Tolerance.Float32), $"output, {problem}");
        Assert.That(TestData.MaxAbsDiff(expected.LogSumExp, lse), Is.LessThanOrEqualTo(Tolerance.Float32), $"lse, {problem}");
    }

    [TestCaseSource(nameof(Seeds))]
    public void BackwardMatchesReference(int seed)
    {
        var problem = RandomProblem.Create(seed + 5000, maxTokens: 48);
        var (q, k, v, ak, av) = Inputs(problem, seed);
        var shape = problem.Shape;
        var options = problem.Options with { Backend = backend };
        if (!AttentionBackends.CanRun(backend, shape, options, ElementType.Float32, backward: true, out var reason))
        {
            Assert.Ignore($"{backend} has no backward pass for this problem: {reason}");
        }

        var rows = q.Length / shape.HeadDim;
        var output = new float[rows * shape.ValueDim];
        var lse = new float[rows];
        var dO = TestData.Floats(new Random(seed + 1), output.Length);
        var (dq, dk, dv, dak, dav) = (new float[q.Length], new float[k.Length], new float[v.Length], new float[ak.Length], new float[av.Length]);
        NeighborhoodAttention.Forward(q, k, v, ak, av, shape, options, output, lse);
        NeighborhoodAttention.Backward(q, k, v, ak, av, output, lse, dO, shape, options, dq, dk, dv, dak, dav);

        var expected = ReferenceAttention.NeighborhoodBackward(
            problem.ToReference(), TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v), TestData.ToDouble(dO),
            TestData.ToDouble(ak), TestData.ToDouble(av));
        Assert.That(TestData.MaxAbsDiff(expected.Query, dq), Is.LessThanOrEqualTo(Tolerance.Float32Gradient), $"dQ, {problem}");
        Assert.That(TestData.MaxAbsDiff(expected.Key, dk), Is.LessThanOrEqualTo(Tolerance.Float32Gradient), $"dK, {problem}");
        Assert.That(TestData.MaxAbsDiff(expected.Value, dv), Is.LessThanOrEqualTo(Tolerance.Float32Gradient), $"dV, {problem}");
        Assert.That(TestData.MaxAbsDiff(expected.AdditionalKey, dak), Is.LessThanOrEqualTo(Tolerance.Float32Gradient), $"d(additional K), {problem}");
        Assert.That(TestData.MaxAbsDiff(expected.AdditionalValue, dav), Is.LessThanOrEqualTo(Tolerance.Float32Gradient), $"d(additional V), {problem}");
    }

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    public void HalfStorageMatchesReferenceOnRoundedInputs(int seed)
    {
        var problem = RandomProblem.Create(seed + 100, allowAdditional: false);
        var (qf, kf, vf, _, _) = Inputs(problem, seed);
        var (q, k, v) = (ToHalf(qf), ToHalf(kf), ToHalf(vf));
        var shape = problem.Shape;
        var output = new Half[q.Length / shape.HeadDim * shape.ValueDim];
        var lse = new float[q.Length / shape.HeadDim];
        NeighborhoodAttention.Forward(q, k, v, shape, problem.Options with { Backend = backend }, output, lse);

        // The Reference sees exactly the half-precision inputs; the output is rounded once to half.
        var expected = ReferenceAttention.Neighborhood(problem.ToReference(), TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v));
        Assert.That(TestData.MaxAbsDiff(expected.Output, output.Select(x => (float)x).ToArray()), Is.LessThanOrEqualTo(Tolerance.Float16), problem.ToString());
        Assert.That(TestData.MaxAbsDiff(expected.LogSumExp, lse), Is.LessThanOrEqualTo(Tolerance.Float32), problem.ToString());
    }

    [Test]
    public void NaNInOneQueryRowStaysInThatRow()
    {
        var shape = new AttentionShape(1, (5, 5), 2, 4);
        var rng = new Random(4);
        var (q, k, v) = (TestData.Floats(rng, 200), TestData.Floats(rng, 200), TestData.Floats(rng, 200));
        q[(12 * 2 * 4) + 4] = float.NaN; // token 12, head 1
        var output = new float[200];
        var lse = new float[50];
        NeighborhoodAttention.Forward(q, k, v, shape, new NeighborhoodAttentionOptions(3) { Backend = backend }, output, lse);
        for (var row = 0; row < 50; row++)
        {
            var nan = row == (12 * 2) + 1;
            Assert.That(output.AsSpan(row * 4, 4).ToArray().Any(float.IsNaN), Is.EqualTo(nan), $"row {row}");
            Assert.That(float.IsNaN(lse[row]), Is.EqualTo(nan), $"lse row {row}");
        }
    }

    [Test]
    public void HugeLogitsStayFiniteAndCorrect()
    {
        var shape = new AttentionShape(1, 6, 1, 1);
        float[] q = [100, -100, 100, 100, -100, 100];
        float[] k = [100, 100, -100, 100, 100, -100];
        float[] v = [1, 2, 3, 4, 5, 6];
        var output = new float[6];
        var lse = new float[6];
        NeighborhoodAttention.Forward(q, k, v, shape, new NeighborhoodAttentionOptions(3) { Scale = 1, Backend = backend }, output, lse);
        var expected = ReferenceAttention.Neighborhood(
            new RandomProblem(shape, new NeighborhoodAttentionOptions(3) { Scale = 1 }).ToReference(),
            TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v));
        Assert.That(output.All(float.IsFinite) && lse.All(float.IsFinite), Is.True);
        Assert.That(TestData.MaxAbsDiff(expected.Output, output), Is.LessThanOrEqualTo(1e-5));
        Assert.That(TestData.MaxAbsDiff(expected.LogSumExp, lse), Is.LessThanOrEqualTo(1e-3)); // |LSE| ≈ 1e4: a few float ulps
    }

    private static (float[] Q, float[] K, float[] V, float[] Ak, float[] Av) Inputs(RandomProblem problem, int seed)
    {
        var s = problem.Shape;
        var rng = new Random(seed);
        var rows = (long)s.Batch * Enumerable.Range(0, s.Rank).Aggregate(1, (n, a) => n * s.Spatial[a]);
        var extra = (long)s.Batch * s.AdditionalTokens;
        return (TestData.Floats(rng, rows * s.Heads * s.HeadDim), TestData.Floats(rng, rows * s.KvHeads * s.HeadDim),
                TestData.Floats(rng, rows * s.KvHeads * s.ValueDim), TestData.Floats(rng, extra * s.KvHeads * s.HeadDim),
                TestData.Floats(rng, extra * s.KvHeads * s.ValueDim));
    }

    private static Half[] ToHalf(float[] data) => data.Select(x => (Half)x).ToArray();
}
