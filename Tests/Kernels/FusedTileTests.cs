using Natten.Reference;
using Natten.Tests.Support;

namespace Natten.Tests.Kernels;

/// <summary>
/// The fused kernel with random tile shapes: boundary tiles (partial query tiles, cut-short KV
/// sub-tiles, short dilation groups, the masked/unmasked split) are where tiled kernels go wrong.
/// </summary>
public sealed class FusedTileTests
{
    public static IEnumerable<TestCaseData> Seeds()
        => Enumerable.Range(1, TestData.SweepCount(quick: 50, extended: 1000)).Select(s => new TestCaseData(s).SetName($"{{m}}(seed {s})"));

    [TestCaseSource(nameof(Seeds))]
    public void RandomTileShapesMatchReference(int seed)
    {
        var problem = RandomProblem.Create(seed + 80000);
        var rng = new Random(seed);
        var rank = problem.Shape.Rank;
        var query = Enumerable.Range(0, rank).Select(_ => rng.Next(1, 6)).ToArray();
        var keys = Enumerable.Range(0, rank).Select(_ => rng.Next(1, 6)).ToArray();
        var options = problem.Options with
        {
            Backend = "fused",
            Tiles = new FusedTiles(AxisValues.PerAxis(query), AxisValues.PerAxis(keys)),
        };
        var s = problem.Shape;
        var rowsTimesD = Rows(s) * s.HeadDim;
        var data = new Random(seed + 1);
        var q = TestData.Floats(data, rowsTimesD);
        var k = TestData.Floats(data, Rows(s) / s.Heads * s.KvHeads * s.HeadDim);
        var v = TestData.Floats(data, Rows(s) / s.Heads * s.KvHeads * s.ValueDim);
        var ak = TestData.Floats(data, (long)s.Batch * s.AdditionalTokens * s.KvHeads * s.HeadDim);
        var av = TestData.Floats(data, (long)s.Batch * s.AdditionalTokens * s.KvHeads * s.ValueDim);
        var output = new float[Rows(s) * s.ValueDim];
        var lse = new float[Rows(s)];
        NeighborhoodAttention.Forward(q, k, v, ak, av, s, options, output, lse);

        var reference = problem.ToReference();
        var expected = ReferenceAttention.Neighborhood(
            reference, TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v),
            ak.Length > 0 ? TestData.ToDouble(ak) : null, av.Length > 0 ? TestData.ToDouble(av) : null);
        var plain = PlainAttention.Forward(reference, q, k, v, ak, av);
        var what = $"{problem}, tiles {options.Tiles}";
        Tolerance.AssertRule(expected.Output, output, plain.Output, Tolerance.Float32Floor, $"output, {what}");
        Tolerance.AssertRule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, $"lse, {what}");
    }

    [Test]
    public void TileExtentsBelowOneAreRejectedByValidation()
    {
        var shape = new AttentionShape(1, (6, 6), 1, 8);
        var options = new NeighborhoodAttentionOptions(3) { Backend = "fused", Tiles = new FusedTiles((2, 0), 2) };
        var ex = Assert.Throws<ArgumentException>(() => NeighborhoodAttention.Forward(new float[288], new float[288], new float[288], shape, options, new float[288]));
        Assert.That(ex!.ParamName, Is.EqualTo("options"));
        Assert.That(ex.Message, Does.Contain("Tiles.Query on axis 1 is 0"));
    }

    [Test]
    public void TilesTooLargeForTheDeviceAreRefusedWithAReason()
    {
        var shape = new AttentionShape(1, (64, 64), 1, 8);
        var options = new NeighborhoodAttentionOptions(3) { Tiles = new FusedTiles((32, 32), 4) };
        Assert.That(AttentionBackends.CanRun("fused", shape, options, ElementType.Float32, false, out var reason), Is.False);
        Assert.That(reason, Does.Contain("threads per group"));
    }

    [TestCaseSource(nameof(Seeds))]
    public void BackwardWithRandomTileShapesMatchesReference(int seed)
    {
        var problem = RandomProblem.Create(seed + 90000, maxTokens: 48);
        var rng = new Random(seed);
        var rank = problem.Shape.Rank;
        var options = problem.Options with
        {
            Backend = "fused",
            Tiles = new FusedTiles(
                AxisValues.PerAxis(Enumerable.Range(0, rank).Select(_ => rng.Next(1, 5)).ToArray()),
                AxisValues.PerAxis(Enumerable.Range(0, rank).Select(_ => rng.Next(1, 5)).ToArray())),
        };
        var s = problem.Shape;
        var data = new Random(seed + 1);
        var q = TestData.Floats(data, Rows(s) * s.HeadDim);
        var k = TestData.Floats(data, Rows(s) / s.Heads * s.KvHeads * s.HeadDim);
        var v = TestData.Floats(data, Rows(s) / s.Heads * s.KvHeads * s.ValueDim);
        var ak = TestData.Floats(data, (long)s.Batch * s.AdditionalTokens * s.KvHeads * s.HeadDim);
        var av = TestData.Floats(data, (long)s.Batch * s.AdditionalTokens * s.KvHeads * s.ValueDim);
        var dO = TestData.Floats(data, Rows(s) * s.ValueDim);
        var output = new float[Rows(s) * s.ValueDim];
        var lse = new float[Rows(s)];
        NeighborhoodAttention.Forward(q, k, v, ak, av, s, options, output, lse);
        var (dq, dk, dv, dak, dav) = (new float[q.Length], new float[k.Length], new float[v.Length], new float[ak.Length], new float[av.Length]);
        NeighborhoodAttention.Backward(q, k, v, ak, av, output, lse, dO, s, options, dq, dk, dv, dak, dav);

        var expected = ReferenceAttention.NeighborhoodBackward(
            problem.ToReference(), TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v), TestData.ToDouble(dO),
            ak.Length > 0 ? TestData.ToDouble(ak) : null, av.Length > 0 ? TestData.ToDouble(av) : null);
        var what = $"{problem}, tiles {options.Tiles}";
        Assert.That(TestData.MaxAbsDiff(expected.Query, dq), Is.LessThanOrEqualTo(Tolerance.Float32Gradient), $"dQ, {what}");
        Assert.That(TestData.MaxAbsDiff(expected.Key, dk), Is.LessThanOrEqualTo(Tolerance.Float32Gradient), $"dK, {what}");
        Assert.That(TestData.MaxAbsDiff(expected.Value, dv), Is.LessThanOrEqualTo(Tolerance.Float32Gradient), $"dV, {what}");
        Assert.That(TestData.MaxAbsDiff(expected.AdditionalKey, dak), Is.LessThanOrEqualTo(Tolerance.Float32Gradient), $"d(additional K), {what}");
        Assert.That(TestData.MaxAbsDiff(expected.AdditionalValue, dav), Is.LessThanOrEqualTo(Tolerance.Float32Gradient), $"d(additional V), {what}");
    }

    [Test]
    public void BackwardIsDeterministic()
    {
        var shape = new AttentionShape(2, (9, 7), 4, 16) { KvHeads = 2, AdditionalTokens = 3 };
        var options = new NeighborhoodAttentionOptions((3, 4)) { Dilation = (2, 1), Stride = (1, 2), Causal = (false, true), Backend = "fused" };
        var data = new Random(5);
        var rows = 2 * 9 * 7 * 4;
        var (q, k, v) = (TestData.Floats(data, rows * 16), TestData.Floats(data, rows / 2 * 16), TestData.Floats(data, rows / 2 * 16));
        var (ak, av, dO) = (TestData.Floats(data, 2 * 3 * 2 * 16), TestData.Floats(data, 2 * 3 * 2 * 16), TestData.Floats(data, rows * 16));
        var output = new float[rows * 16];
        var lse = new float[rows];
        NeighborhoodAttention.Forward(q, k, v, ak, av, shape, options, output, lse);

        float[][] Run()
        {
            var grads = new[] { new float[q.Length], new float[k.Length], new float[v.Length], new float[ak.Length], new float[av.Length] };
            NeighborhoodAttention.Backward(q, k, v, ak, av, output, lse, dO, shape, options, grads[0], grads[1], grads[2], grads[3], grads[4]);
            return grads;
        }

        var first = Run();
        var second = Run();
        for (var i = 0; i < first.Length; i++)
        {
            Assert.That(
                first[i].Select(BitConverter.SingleToInt32Bits), Is.EqualTo(second[i].Select(BitConverter.SingleToInt32Bits)),
                $"gradient {i}: identical bits on every run");
        }
    }

    private static int Rows(AttentionShape s) => Enumerable.Range(0, s.Rank).Aggregate(s.Batch, (n, a) => n * s.Spatial[a]) * s.Heads;
}
