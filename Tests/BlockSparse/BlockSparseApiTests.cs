using Natten.Reference;
using Natten.Tests.Support;

namespace Natten.Tests.BlockSparse;

/// <summary>The public entry points: validation of calls, the reference backend, device tensors, backend choice, FLOPs.</summary>
public sealed class BlockSparseApiTests
{
    private static readonly BlockSparseShape Shape = new(2, 10, 12, 4, 6) { KvHeads = 2, ValueDim = 3 };

    public static IEnumerable<TestCaseData> InvalidCalls()
    {
        TestCaseData Case(string name, Action call, string param, string fragment) => new TestCaseData(call, param, fragment).SetName($"{{m}}({name})");
        var c = MaskedCase.Create(new Random(1), Shape);
        var mask = BlockMasks.SlidingWindow(10, 12, 2, 2, 4, 4);
        var output = new float[c.OutputLength];
        void Run(BlockSparseShape shape, BlockMask m, BlockSparseOptions options, float[]? query = null, float[]? destination = null)
            => BlockSparseAttention.Forward(query ?? c.Query, c.Key, c.Value, m, shape, options, destination ?? output);

        yield return Case("null mask", () => Run(Shape, null!, default), "mask", "mask is null");
        yield return Case("query tokens differ from the mask's", () => Run(Shape with { QueryTokens = 11 }, mask, default), "mask", "they must match");
        yield return Case("mask heads differ from the shape's", () => Run(Shape, BlockMasks.StridedHeads(12, 3, 4, 1, 2), default), "mask", "shape.QueryTokens");
        yield return Case("per-head mask with 3 heads", () => Run(Shape with { QueryTokens = 12 }, BlockMasks.StridedHeads(12, 3, 4, 1, 2), default), "mask", "distinguishes 3 heads");
        yield return Case("heads not a multiple of kv heads", () => Run(Shape with { KvHeads = 3 }, mask, default), "shape", "multiple of shape.KvHeads");
        yield return Case("zero head dim", () => Run(Shape with { HeadDim = 0 }, mask, default), "shape", "shape.HeadDim is 0");
        yield return Case("negative scale", () => Run(Shape, mask, new BlockSparseOptions { Scale = -1 }), "options", "finite and positive");
        yield return Case("bias of other sizes", () => Run(Shape, mask, new BlockSparseOptions { Bias = ScoreBias.Dense(new float[9], 3, 3) }), "options", "options.Bias covers 3 query × 3 key");
        yield return Case("unknown backend", () => Run(Shape, mask, new BlockSparseOptions { Backend = "cpu" }), "options", "not a block-sparse backend");
        yield return Case("bad tiling", () => Run(Shape, mask, new BlockSparseOptions { Tiling = new BlockSparseTiling(0, 4) }), "options", "options.Tiling");
        yield return Case("short query", () => Run(Shape, mask, default, query: new float[c.Query.Length - 1]), "query", "the shape needs exactly");
        yield return Case("short output", () => Run(Shape, mask, default, destination: new float[c.OutputLength - 1]), "output", "too short");
        yield return Case("output overlapping the query", () => BlockSparseAttention.Forward(c.Query, c.Key, c.Value, mask, Shape, default, c.Query.AsSpan(0, (int)c.OutputLength)), "output", "overlaps query");
        yield return Case("non-finite bias", () => ScoreBias.Dense([0f, float.NaN], 1, 2), "values", "must be finite");
    }

    [TestCaseSource(nameof(InvalidCalls))]
    public void InvalidCallsThrowBeforeAnyWork(Action call, string param, string fragment)
    {
        var ex = Assert.Throws<ArgumentException>(() => call());
        Assert.That(ex!.ParamName, Is.EqualTo(param), ex.Message);
        Assert.That(ex.Message, Does.Contain(fragment));
    }

    [Test]
    public void TheReferenceBackendIsTheOracle()
    {
        var c = RandomMaskCase.Create(21);
        using var mask = c.Mask();
        var output = new float[c.Data.OutputLength];
        var lse = new float[c.Data.LseLength];
        BlockSparseAttention.Forward(c.Data.Query, c.Data.Key, c.Data.Value, mask, c.Shape, c.Options("reference"), output, lse);
        var expected = ReferenceAttention.DenseMasked(
            c.Data.Dims(), TestData.ToDouble(c.Data.Query), TestData.ToDouble(c.Data.Key), TestData.ToDouble(c.Data.Value), c.Allows);
        Assert.That(output, Is.EqualTo(expected.Output.Select(x => (float)x)).AsCollection);
        Assert.That(lse, Is.EqualTo(expected.LogSumExp.Select(x => (float)x)).AsCollection);
    }

    [Test]
    public void BackendsAreChosenInOrder()
    {
        Assert.That(BlockSparseAttention.BackendNames, Is.EqualTo(new[] { "fused", "naive", "reference" }));
        var c = RandomMaskCase.Create(3);
        using var mask = c.Mask();
        var problem = Natten.Validation.ProblemValidator.ValidateBlockSparse(c.Shape, mask, default, ElementType.Float32);
        Assert.That(Natten.BlockSparse.BlockSparseBackends.Choose(problem, null, Natten.Backends.AttentionPass.Forward).Name, Is.EqualTo("fused"));
    }

    [Test]
    public void DeviceTensorsGiveTheHostResults()
    {
        var c = RandomMaskCase.Create(31);
        using var mask = c.Mask();
        var (output, lse) = BlockSparseKernelTests.Forward(c);
        var device = AttentionDevice.Default;
        using var q = device.Upload<float>(c.Data.Query, c.Data.Query.Length);
        using var k = device.Upload<float>(c.Data.Key, c.Data.Key.Length);
        using var v = device.Upload<float>(c.Data.Value, c.Data.Value.Length);
        using var o = device.Allocate<float>((int)c.Data.OutputLength);
        using var l = device.Allocate<float>((int)c.Data.LseLength);
        BlockSparseAttention.Forward(q, k, v, mask, c.Shape, c.Options(), o, l);
        Assert.That(o.ToArray(), Is.EqualTo(output).AsCollection);
        Assert.That(l.ToArray(), Is.EqualTo(lse).AsCollection);

        var outputGrad = TestData.Floats(new Random(2), c.Data.OutputLength);
        var (dq, dk, dv) = (new float[q.Length], new float[k.Length], new float[v.Length]);
        BlockSparseAttention.Backward(c.Data.Query, c.Data.Key, c.Data.Value, output, lse, outputGrad, mask, c.Shape, c.Options(), dq, dk, dv);
        using var dO = device.Upload<float>(outputGrad, outputGrad.Length);
        using var gq = device.Allocate<float>(dq.Length);
        using var gk = device.Allocate<float>(dk.Length);
        using var gv = device.Allocate<float>(dv.Length);
        BlockSparseAttention.Backward(q, k, v, o, l, dO, mask, c.Shape, c.Options(), gq, gk, gv);
        Assert.That(gq.ToArray(), Is.EqualTo(dq).AsCollection);
        Assert.That(gk.ToArray(), Is.EqualTo(dk).AsCollection);
        Assert.That(gv.ToArray(), Is.EqualTo(dv).AsCollection);

        var ex = Assert.Throws<ArgumentException>(() => BlockSparseAttention.Forward(q, k, v, mask, c.Shape, c.Options(), q));
        Assert.That(ex!.Message, Does.Contain("overlaps query"));
    }

    [Test]
    public void UsefulFlopsCountOnlyAllowedPairs()
    {
        var c = RandomMaskCase.Create(44);
        using var mask = c.Mask();
        var s = c.Shape;
        long pairs = 0;
        for (var b = 0; b < s.Batch; b++)
        {
            for (var h = 0; h < s.Heads; h++)
            {
                for (var q = 0; q < s.QueryTokens; q++)
                {
                    pairs += Enumerable.Range(0, s.KeyTokens).Count(k => c.Allows(b, h, q, k));
                }
            }
        }

        Assert.That(BlockSparseAttention.ForwardFlops(mask, s), Is.EqualTo(2.0 * (s.HeadDim + s.ValueDim) * pairs));
    }
}
