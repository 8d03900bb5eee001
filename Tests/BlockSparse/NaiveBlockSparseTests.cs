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

        float[] Run(NaiveBlockSparseBackend backend, MaskedCase inputs, float[] lse)
        {
            Assert.That(backend.CanRun(problem, AttentionPass.Forward, out var why), Is.True, why);
            var output = new float[inputs.OutputLength];
            backend.Forward(problem, new ForwardTensors<float> { Query = inputs.Query, Key = inputs.Key, Value = inputs.Value, Output = output, LogSumExp = lse });
            return output;
        }

        // A run on other inputs first: device memory the allocator hands out again holds its results, so a
        // chunk that was skipped cannot pass for a computed one.
        Run(new NaiveBlockSparseBackend(), MaskedCase.Create(new Random(99), shape), new float[data.LseLength]);
        var (lseWhole, lseChunked) = (new float[data.LseLength], new float[data.LseLength]);
        var chunked = Run(new NaiveBlockSparseBackend(workspaceCap: 2 * 20 * 20 * 4), data, lseChunked); // one batch entry's H·Nq·Nk floats
        var whole = Run(new NaiveBlockSparseBackend(), data, lseWhole);
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

    public static IEnumerable<TestCaseData> BackwardSeeds() => BlockSparseKernelTests.Seeds(8, 150, 6001);

    [TestCaseSource(nameof(BackwardSeeds))]
    public void BackwardFloat32MatchesTheReference(int seed)
    {
        var c = RandomMaskCase.Create(seed);
        var output = new float[c.Data.OutputLength];
        var lse = new float[c.Data.LseLength];
        using var mask = c.Mask();
        BlockSparseAttention.Forward(c.Data.Query, c.Data.Key, c.Data.Value, mask, c.Shape, c.Options(Naive), output, lse);
        var outputGrad = TestData.Floats(new Random(seed + 7), c.Data.OutputLength);
        var (dq, dk, dv) = (new float[c.Data.Query.Length], new float[c.Data.Key.Length], new float[c.Data.Value.Length]);
        BlockSparseAttention.Backward(c.Data.Query, c.Data.Key, c.Data.Value, output, lse, outputGrad, mask, c.Shape, c.Options(Naive), dq, dk, dv);
        var expected = ReferenceAttention.DenseMaskedBackward(
            c.Data.Dims(), TestData.ToDouble(c.Data.Query), TestData.ToDouble(c.Data.Key), TestData.ToDouble(c.Data.Value),
            TestData.ToDouble(outputGrad), c.Allows);
        MaskedAssert.Within(expected.Query, dq, Tolerance.Float32Gradient, $"dQ, {c}");
        MaskedAssert.Within(expected.Key, dk, Tolerance.Float32Gradient, $"dK, {c}");
        MaskedAssert.Within(expected.Value, dv, Tolerance.Float32Gradient, $"dV, {c}");
    }

    [Test]
    public void BackwardWithBiasAndHalfStorageMatchesTheReference()
    {
        const int N = 21;
        const int H = 2;
        using var mask = BlockMasks.Documents([0, 6, 15, 21], 4, 4, causal: true);
        var rng = new Random(12);
        var biasValues = TestData.Floats(rng, H * N * N);
        using var bias = ScoreBias.Dense(biasValues, N, N, heads: H);
        var shape = new BlockSparseShape(1, N, N, H, 8) { KvHeads = 1, ValueDim = 8 };
        var data = MaskedCase.Create(rng, shape);
        static Half[] ToHalf(float[] x) => [.. x.Select(v => (Half)v)];
        static float[] FromHalf(Half[] x) => [.. x.Select(v => (float)v)];
        var (q, k, v) = (ToHalf(data.Query), ToHalf(data.Key), ToHalf(data.Value));
        var options = new BlockSparseOptions { Backend = Naive, Bias = bias };
        var output = new Half[data.OutputLength];
        var lse = new float[data.LseLength];
        BlockSparseAttention.Forward(q, k, v, mask, shape, options, output, lse);
        var outputGrad = ToHalf(TestData.Floats(rng, data.OutputLength));
        var (dq, dk, dv) = (new Half[q.Length], new Half[k.Length], new Half[v.Length]);
        BlockSparseAttention.Backward(q, k, v, output, lse, outputGrad, mask, shape, options, dq, dk, dv);
        double Bias(int b, int h, int i, int j) => biasValues[(((h * N) + i) * N) + j];
        var grads = ReferenceAttention.DenseMaskedBackward(
            data.Dims(), TestData.ToDouble(FromHalf(q)), TestData.ToDouble(FromHalf(k)), TestData.ToDouble(FromHalf(v)),
            TestData.ToDouble(FromHalf(outputGrad)), mask.Allows, Bias);
        MaskedAssert.Within(grads.Query, FromHalf(dq), Tolerance.Float16Gradient, "dQ");
        MaskedAssert.Within(grads.Key, FromHalf(dk), Tolerance.Float16Gradient, "dK");
        MaskedAssert.Within(grads.Value, FromHalf(dv), Tolerance.Float16Gradient, "dV");
    }

    /// <summary>The backward in batch chunks (a cap of one batch entry's P and dS) gives the bits of the unchunked run, twice in a row (deterministic).</summary>
    [Test]
    public void BackwardChunksAndRepeatsGiveTheSameBits()
    {
        var shape = new BlockSparseShape(3, 16, 16, 2, 4) { KvHeads = 1, ValueDim = 3 };
        using var mask = BlockMasks.SlidingWindow(16, 16, 3, 2, 4, 4);
        var data = MaskedCase.Create(new Random(19), shape);
        var problem = ProblemValidator.ValidateBlockSparse(shape, mask, default, ElementType.Float32);
        var output = new float[data.OutputLength];
        var lse = new float[data.LseLength];
        BlockSparseAttention.Forward(data.Query, data.Key, data.Value, mask, shape, new BlockSparseOptions { Backend = Naive }, output, lse);
        var outputGrad = TestData.Floats(new Random(20), data.OutputLength);

        float[][] Run(NaiveBlockSparseBackend backend, float[] gradient)
        {
            Assert.That(backend.CanRun(problem, AttentionPass.Backward, out var why), Is.True, why);
            var (dq, dk, dv) = (new float[data.Query.Length], new float[data.Key.Length], new float[data.Value.Length]);
            backend.Backward(problem, new BackwardTensors<float>
            {
                Query = data.Query, Key = data.Key, Value = data.Value, Output = output, LogSumExp = lse, OutputGrad = gradient,
                QueryGrad = dq, KeyGrad = dk, ValueGrad = dv,
            });
            return [dq, dk, dv];
        }

        // Another upstream gradient first, so reused device memory cannot stand in for a skipped chunk.
        Run(new NaiveBlockSparseBackend(), TestData.Floats(new Random(98), data.OutputLength));
        var chunked = Run(new NaiveBlockSparseBackend(workspaceCap: 2 * 2 * 16 * 16 * 4), outputGrad); // P and dS of one batch entry
        var whole = Run(new NaiveBlockSparseBackend(), outputGrad);
        var again = Run(new NaiveBlockSparseBackend(), outputGrad);
        Assert.That(again, Is.EqualTo(whole));
        Assert.That(chunked, Is.EqualTo(whole));
        var expected = ReferenceAttention.DenseMaskedBackward(
            data.Dims(), TestData.ToDouble(data.Query), TestData.ToDouble(data.Key), TestData.ToDouble(data.Value), TestData.ToDouble(outputGrad), mask.Allows);
        MaskedAssert.Within(expected.Key, chunked[1], Tolerance.Float32Gradient, "chunked dK against the oracle");
    }

    [Test]
    public void TheBackwardNeedsTwiceTheWorkspace()
    {
        var shape = new BlockSparseShape(1, 32, 32, 2, 4);
        using var mask = BlockMasks.Causal(32, 32, 8, 8);
        var problem = ProblemValidator.ValidateBlockSparse(shape, mask, default, ElementType.Float32);
        var backend = new NaiveBlockSparseBackend(workspaceCap: 3 * 32 * 32 * 4); // 1.5 × one batch entry's H·Nq·Nk floats: P fits, P and dS do not
        Assert.That(backend.CanRun(problem, AttentionPass.Forward, out var why), Is.True, why);
        Assert.That(backend.CanRun(problem, AttentionPass.Backward, out why), Is.False);
        Assert.That(why, Does.Contain("P and dS"));
    }

    [Test]
    public void IsListedBetweenFusedAndReference()
        => Assert.That(BlockSparseAttention.BackendNames, Is.EqualTo(new[] { "fused", "naive", "reference" }));
}
