using Natten.Backends;
using Natten.BlockSparse;
using Natten.Reference;
using Natten.Tests.Support;
using Natten.Validation;

namespace Natten.Tests.BlockSparse;

/// <summary>
/// The naive (unfused) block-sparse backend — dense masked scores, softmax, P·V on the default ILGPU
/// accelerator (the CPU accelerator here) — against the Reference's dense-mask oracle: the random masks of
/// <see cref="RandomMaskCase"/> (full/partial/empty blocks, empty rows, GQA, D ≠ Dv, per-head and per-batch
/// lists), half storage, the pattern builders' element masks, a score bias, batch chunking of the
/// workspace, and that it refuses the backward with a reason.
/// </summary>
public sealed class NaiveBlockSparseTests
{
    private const string Naive = "naive";

    public static IEnumerable<TestCaseData> ForwardSeeds() => BlockSparseKernelTests.Seeds(12, 200, 5001);

    [TestCaseSource(nameof(ForwardSeeds))]
    public void ForwardFloat32FollowsTheToleranceRule(int seed)
    {
        var c = RandomMaskCase.Create(seed);
        var output = new float[c.Data.OutputLength];
        var lse = new float[c.Data.LseLength];
        using var mask = c.Mask();
        BlockSparseAttention.Forward(c.Data.Query, c.Data.Key, c.Data.Value, mask, c.Shape, c.Options(Naive), output, lse);
        var expected = ReferenceAttention.DenseMasked(
            c.Data.Dims(), TestData.ToDouble(c.Data.Query), TestData.ToDouble(c.Data.Key), TestData.ToDouble(c.Data.Value), c.Allows);
        var plain = PlainMaskedAttention.Forward(c.Data.Dims(), c.Data.Query, c.Data.Key, c.Data.Value, c.Allows);
        MaskedAssert.Rule(expected.Output, output, plain.Output, Tolerance.Float32Floor, $"output, {c}");
        MaskedAssert.Rule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, $"lse, {c}");
        for (var i = 0; i < lse.Length; i++)
        {
            if (float.IsNegativeInfinity(lse[i]))
            {
                var row = output.AsSpan(i * c.Shape.ValueDim, c.Shape.ValueDim).ToArray();
                Assert.That(row, Is.All.EqualTo(0f), $"row {i} has no allowed key: output 0, {c}");
            }
        }
    }

    [TestCase(5101)]
    [TestCase(5102)]
    [TestCase(5103)]
    public void Float16StorageFollowsTheToleranceRule(int seed)
    {
        var c = RandomMaskCase.Create(seed);
        static Half[] ToHalf(float[] x) => [.. x.Select(v => (Half)v)];
        static float[] FromHalf(Half[] x) => [.. x.Select(v => (float)v)];
        var (q, k, v) = (ToHalf(c.Data.Query), ToHalf(c.Data.Key), ToHalf(c.Data.Value));
        var (qh, kh, vh) = (FromHalf(q), FromHalf(k), FromHalf(v));
        var output = new Half[c.Data.OutputLength];
        var lse = new float[c.Data.LseLength];
        using var mask = c.Mask();
        BlockSparseAttention.Forward(q, k, v, mask, c.Shape, c.Options(Naive), output, lse);
        var dims = c.Data.Dims();
        var expected = ReferenceAttention.DenseMasked(dims, TestData.ToDouble(qh), TestData.ToDouble(kh), TestData.ToDouble(vh), c.Allows);
        var plain = PlainMaskedAttention.Forward(dims, qh, kh, vh, c.Allows);
        MaskedAssert.Rule(expected.Output, FromHalf(output), FromHalf(ToHalf(plain.Output)), Tolerance.Float16Floor, $"output, {c}");
        MaskedAssert.Rule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, $"lse, {c}");
    }

    private static IEnumerable<TestCaseData> Builders()
    {
        TestCaseData Case(string name, int heads, Func<BlockMask> mask) => new TestCaseData(heads, mask).SetName($"NaiveBlockSparse_{name}");
        yield return Case("sliding_window", 2, () => BlockMasks.SlidingWindow(37, 37, 5, 2, 8, 8));
        yield return Case("causal_cross", 1, () => BlockMasks.Causal(19, 30, 4, 8));
        yield return Case("strided_heads", 3, () => BlockMasks.StridedHeads(36, 3, 4, 1, 2, 1));
        yield return Case("halo_2d", 2, () => BlockMasks.HaloNet(AxisValues.PerAxis([8, 8]), 4, 1));
        yield return Case("documents_causal", 2, () => BlockMasks.Documents([0, 7, 20, 33], 8, 8, causal: true));
        yield return Case("key_padding", 2, () => BlockMasks.KeyPadding([21], 17, 25, 8, 8));
    }

    /// <summary>Each builder's element mask (partial blocks) through the naive kernels, against the reference backend on the same mask.</summary>
    [TestCaseSource(nameof(Builders))]
    public void BuildersMatchTheReference(int heads, Func<BlockMask> build)
    {
        using var mask = build();
        var shape = new BlockSparseShape(1, mask.QueryTokens, mask.KeyTokens, heads, 8) { ValueDim = 5 };
        var data = MaskedCase.Create(new Random(mask.QueryTokens * 31), shape);
        var expected = ReferenceAttention.DenseMasked(
            data.Dims(), TestData.ToDouble(data.Query), TestData.ToDouble(data.Key), TestData.ToDouble(data.Value), mask.Allows);
        var output = new float[data.OutputLength];
        var lse = new float[data.LseLength];
        BlockSparseAttention.Forward(data.Query, data.Key, data.Value, mask, shape, new BlockSparseOptions { Backend = Naive }, output, lse);
        var plain = PlainMaskedAttention.Forward(data.Dims(), data.Query, data.Key, data.Value, mask.Allows);
        MaskedAssert.Rule(expected.Output, output, plain.Output, Tolerance.Float32Floor, $"output, {mask}");
        MaskedAssert.Rule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, $"lse, {mask}");
    }

    [Test]
    public void DenseScoreBiasIsAdded()
    {
        const int N = 23;
        const int H = 2;
        using var mask = BlockMasks.SlidingWindow(N, N, 4, 4, 8, 8);
        var rng = new Random(77);
        var biasValues = TestData.Floats(rng, H * N * N);
        using var bias = ScoreBias.Dense(biasValues, N, N, heads: H);
        var shape = new BlockSparseShape(2, N, N, H, 4);
        var data = MaskedCase.Create(rng, shape);
        double Bias(int b, int h, int q, int k) => biasValues[(((h * N) + q) * N) + k];
        var expected = ReferenceAttention.DenseMasked(
            data.Dims(), TestData.ToDouble(data.Query), TestData.ToDouble(data.Key), TestData.ToDouble(data.Value), mask.Allows, Bias);
        var plain = PlainMaskedAttention.Forward(data.Dims(), data.Query, data.Key, data.Value, mask.Allows, Bias);
        var output = new float[data.OutputLength];
        var lse = new float[data.LseLength];
        BlockSparseAttention.Forward(data.Query, data.Key, data.Value, mask, shape, new BlockSparseOptions { Backend = Naive, Bias = bias }, output, lse);
        MaskedAssert.Rule(expected.Output, output, plain.Output, Tolerance.Float32Floor, "output");
        MaskedAssert.Rule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, "lse");
    }

    /// <summary>A workspace cap of one batch entry runs the batch in turns; every element is computed by the same arithmetic, so the bits agree.</summary>
    [Test]
    public void BatchChunksGiveTheSameBits()
    {
        var shape = new BlockSparseShape(3, 20, 20, 2, 4) { KvHeads = 1 };
        using var mask = BlockMasks.SlidingWindow(20, 20, 3, 3, 4, 4);
        var data = MaskedCase.Create(new Random(9), shape);
        var problem = ProblemValidator.ValidateBlockSparse(shape, mask, default, ElementType.Float32);
        var p = problem.ToParams();
        Assert.That(Natten.Kernels.BlockSparse.NaiveBlockSparseLauncher.BatchesPerChunk(p, 2 * 20 * 20 * 4), Is.EqualTo(1));
        Assert.That(Natten.Kernels.BlockSparse.NaiveBlockSparseLauncher.BatchesPerChunk(p, 1L << 30), Is.EqualTo(3));

        float[] Run(NaiveBlockSparseBackend backend, float[] lse)
        {
            Assert.That(backend.CanRun(problem, AttentionPass.Forward, out var why), Is.True, why);
            var output = new float[data.OutputLength];
            backend.Forward(problem, new ForwardTensors<float> { Query = data.Query, Key = data.Key, Value = data.Value, Output = output, LogSumExp = lse });
            return output;
        }

        var (lseWhole, lseChunked) = (new float[data.LseLength], new float[data.LseLength]);
        var whole = Run(new NaiveBlockSparseBackend(), lseWhole);
        var chunked = Run(new NaiveBlockSparseBackend(workspaceCap: 2 * 20 * 20 * 4 * 4), lseChunked);
        Assert.That(chunked, Is.EqualTo(whole));
        Assert.That(lseChunked, Is.EqualTo(lseWhole));
        var expected = ReferenceAttention.DenseMasked(
            data.Dims(), TestData.ToDouble(data.Query), TestData.ToDouble(data.Key), TestData.ToDouble(data.Value), mask.Allows);
        MaskedAssert.Within(expected.Output, chunked, Tolerance.Float32Gradient, "chunked output against the oracle");
    }

    [Test]
    public void AWorkspaceBeyondTheCapIsRefusedWithTheReason()
    {
        var shape = new BlockSparseShape(1, 64, 64, 2, 4);
        using var mask = BlockMasks.Causal(64, 64, 16, 16);
        var problem = ProblemValidator.ValidateBlockSparse(shape, mask, default, ElementType.Float32);
        var backend = new NaiveBlockSparseBackend(workspaceCap: 1000);
        Assert.That(backend.CanRun(problem, AttentionPass.Forward, out var why), Is.False);
        Assert.That(why, Does.Contain("dense score workspace"));
    }

    [Test]
    public void TheBackwardIsRefusedWithAReason()
    {
        var shape = new BlockSparseShape(1, 8, 8, 1, 4);
        using var mask = BlockMasks.Causal(8, 8, 4, 4);
        var x = new float[8 * 4];
        var lse = new float[8];
        var ex = Assert.Throws<NotSupportedException>(() => BlockSparseAttention.Backward(
            x, x, x, x, lse, x, mask, shape, new BlockSparseOptions { Backend = Naive }, new float[x.Length], new float[x.Length], new float[x.Length]));
        Assert.That(ex!.Message, Does.Contain("naive").And.Contain("forward only"));
    }

    [Test]
    public void IsListedBetweenFusedAndReference()
        => Assert.That(BlockSparseAttention.BackendNames, Is.EqualTo(new[] { "fused", "naive", "reference" }));
}
