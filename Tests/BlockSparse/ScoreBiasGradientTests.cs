using Natten.Backends;
using Natten.BlockSparse;
using Natten.Reference;
using Natten.Tests.Support;
using Natten.Validation;

namespace Natten.Tests.BlockSparse;

/// <summary>
/// The score bias's gradient (opt-in <c>biasGradient</c> of the backward): the Reference's oracle against
/// finite differences, the fused kernels (float, half, bf16 storage) and the reference backend against
/// the oracle for dense biases (shared, per head, per batch, both) and NATTEN's RPB (1D/2D, dilation,
/// shared table), determinism, device tensors and validation.
/// </summary>
public sealed class ScoreBiasGradientTests
{
    public static IEnumerable<TestCaseData> DenseSeeds()
        => Enumerable.Range(4001, TestData.SweepCount(12, 200)).Select(s => new TestCaseData(s).SetName($"{{m}}(seed {s})"));

    public static IEnumerable<TestCaseData> TableCases()
    {
        TestCaseData Case(string name, int[] extents, int[] kernel, int[] dilation, int tableHeads, int batch, bool full = false)
            => new TestCaseData(new TableCase(extents, kernel, dilation, tableHeads, batch, full)).SetName($"{{m}}({name})");
        yield return Case("1D K3 dilation 2", [12], [3], [2], 2, 2);
        yield return Case("1D K4, table shared by 2 heads", [9], [4], [1], 1, 1);
        yield return Case("2D K3x3 dilation 1x2", [5, 6], [3, 3], [1, 2], 2, 1);

        // Every pair allowed: pairs beyond the table get nothing, and with dilation 2 several keys of a row share an entry.
        yield return Case("1D K3 dilation 2, full mask", [11], [3], [2], 2, 2, full: true);
    }

    [Test]
    public void TheOracleMatchesFiniteDifferencesForADenseBias()
    {
        // Batch 2, heads 2, a bias per head shared by the batch entries (summed over them), masked pairs and an empty row per plane.
        var shape = new BlockSparseShape(2, 5, 6, 2, 3);
        var data = MaskedCase.Create(new Random(7), shape);
        static bool Allows(int b, int h, int q, int k) => (q + (2 * k) + b + h) % 3 != 0 && q != 4 - b;
        var values = TestData.Doubles(new Random(8), (long)shape.Heads * shape.QueryTokens * shape.KeyTokens);
        long Index(int b, int h, int q, int k) => ((((long)h * shape.QueryTokens) + q) * shape.KeyTokens) + k;
        AssertOracleMatchesFiniteDifferences(data, Allows, values, Index);
    }

    [TestCaseSource(nameof(TableCases))]
    public void TheOracleMatchesFiniteDifferencesForARelativePositionBias(TableCase t)
    {
        var data = MaskedCase.Create(new Random(t.Tokens), t.Shape(heads: 2, headDim: 3));
        var table = TestData.Doubles(new Random(t.Tokens + 1), t.TableLength);
        AssertOracleMatchesFiniteDifferences(data, t.Allows, table, t.Index);
    }

    [TestCaseSource(nameof(DenseSeeds))]
    public void FusedDenseBiasGradientMatchesTheOracle(int seed)
    {
        var c = RandomMaskCase.Create(seed);
        var bias = DenseBiasCase.Create(new Random(seed + 3), c.Shape);
        using var scoreBias = bias.Build();
        var options = c.Options() with { Bias = scoreBias };
        using var mask = c.Mask();
        var (expected, actual) = RunFloat32(c.Data, mask, options, c.Allows, bias.Value, bias.Index, bias.Values.Length, seed);
        MaskedAssert.Within(expected, actual, Tolerance.Float32Gradient, $"d(bias) {bias}, {c}");
    }

    [TestCase("fused", 1, 1, 1, TestName = "{m}(fused, bias shared by batch and heads, shared mask)")]
    [TestCase("fused", 1, 1, 2, TestName = "{m}(fused, bias shared by batch and heads, per-head mask)")]
    [TestCase("fused", 1, 2, 2, TestName = "{m}(fused, bias per head, per-head mask)")]
    [TestCase("fused", 2, 1, 1, TestName = "{m}(fused, bias per batch entry, shared mask)")]
    [TestCase("fused", 2, 2, 1, TestName = "{m}(fused, bias per batch entry and head: direct)")]
    [TestCase("naive", 1, 1, 1, TestName = "{m}(naive, bias shared by batch and heads, shared mask)")]
    [TestCase("naive", 1, 1, 2, TestName = "{m}(naive, bias shared by batch and heads, per-head mask)")]
    [TestCase("naive", 1, 2, 2, TestName = "{m}(naive, bias per head, per-head mask)")]
    [TestCase("naive", 2, 1, 1, TestName = "{m}(naive, bias per batch entry, shared mask)")]
    [TestCase("naive", 2, 2, 1, TestName = "{m}(naive, bias per batch entry and head: direct)")]
    public void DenseBiasGradientForEveryBroadcast(string backend, int batches, int heads, int maskHeads)
    {
        var shape = new BlockSparseShape(2, 11, 13, 2, 4) { KvHeads = 1, ValueDim = 3 };
        var data = MaskedCase.Create(new Random(batches + (2 * heads) + (4 * maskHeads)), shape);
        var rng = new Random(17);
        var dense = Enumerable.Range(0, maskHeads * 11 * 13).Select(_ => rng.Next(3) != 0).ToArray();
        bool Allows(int b, int h, int q, int k) => dense[((((maskHeads == 1 ? 0 : h) * 11) + q) * 13) + k];
        var values = TestData.Floats(rng, batches * heads * 11 * 13).Select(x => 2 * x).ToArray();
        var bias = new DenseBiasCase(values, batches, heads, 11, 13);
        using var scoreBias = bias.Build();
        using var mask = BlockMask.FromDense(dense, 11, 13, 4, 5, maskHeads);
        var options = new BlockSparseOptions { Bias = scoreBias, Backend = backend };
        var (expected, actual) = RunFloat32(data, mask, options, Allows, bias.Value, bias.Index, values.Length, batches);
        MaskedAssert.Within(expected, actual, Tolerance.Float32Gradient, $"d(bias) {bias}");
        Assert.That(actual.Count(x => x != 0), Is.GreaterThan(values.Length / 3), "most bias values receive a gradient");
    }

    [TestCaseSource(nameof(TableCases))]
    public void FusedRelativePositionBiasGradientMatchesTheOracle(TableCase t) => RelativePositionBiasGradientMatchesTheOracle(t, "fused");

    [TestCaseSource(nameof(TableCases))]
    public void NaiveRelativePositionBiasGradientMatchesTheOracle(TableCase t) => RelativePositionBiasGradientMatchesTheOracle(t, "naive");

    [Test]
    public void NaiveBiasGradientOverBatchChunksEqualsOneChunk([Values] bool table)
    {
        // A one-batch-entry workspace cap makes the naive backward run its three batch entries in turn; every chunk's dS
        // must reach the sink (pairs for the broadcast dense bias, per-row partials for the table), bit for bit as in one chunk.
        var shape = new BlockSparseShape(3, 12, 12, 2, 4) { KvHeads = 1 };
        var t = new TableCase([12], [5], [1], 1, 3, false);
        var data = MaskedCase.Create(new Random(31), table ? t.Shape(heads: 2, headDim: 4) : shape);
        var rng = new Random(32);
        var values = TestData.Floats(rng, table ? t.TableLength : 12 * 12).Select(x => 2 * x).ToArray();
        var dense = new DenseBiasCase(values, 1, 1, 12, 12);
        using var scoreBias = table ? t.Build(values) : dense.Build();
        using var mask = table ? t.Mask() : BlockMasks.SlidingWindow(12, 12, 3, 3, 4, 4);
        var problem = ProblemValidator.ValidateBlockSparse(data.Shape, mask, new BlockSparseOptions { Bias = scoreBias }, ElementType.Float32, biasGradient: true);
        Assert.That(Natten.Kernels.BlockSparse.NaiveBlockSparseLauncher.BatchesPerChunk(problem.ToParams(), 2 * 12 * 12 * 4), Is.EqualTo(1));

        float[] Run(NaiveBlockSparseBackend backend)
        {
            Assert.That(backend.CanRun(problem, AttentionPass.Backward, out var why), Is.True, why);
            var output = new float[data.OutputLength];
            var lse = new float[data.LseLength];
            backend.Forward(problem, new ForwardTensors<float> { Query = data.Query, Key = data.Key, Value = data.Value, Output = output, LogSumExp = lse });
            var outputGrad = TestData.Floats(new Random(33), data.OutputLength);
            var dBias = new float[values.Length];
            backend.Backward(problem, new BackwardTensors<float>
            {
                Query = data.Query, Key = data.Key, Value = data.Value, Output = output, LogSumExp = lse, OutputGrad = outputGrad,
                QueryGrad = new float[data.Query.Length], KeyGrad = new float[data.Key.Length], ValueGrad = new float[data.Value.Length],
                BiasGradient = dBias,
            });
            return dBias;
        }

        var chunked = Run(new NaiveBlockSparseBackend(workspaceCap: 2 * 2 * 12 * 12 * 4));
        var whole = Run(new NaiveBlockSparseBackend());
        Assert.That(chunked, Is.EqualTo(whole));
        Assert.That(chunked.Count(x => x != 0), Is.GreaterThan(values.Length / 3), "most bias values receive a gradient");
    }

    private static void RelativePositionBiasGradientMatchesTheOracle(TableCase t, string backend)
    {
        var data = MaskedCase.Create(new Random(t.Tokens), t.Shape(heads: 2, headDim: 4));
        var table = TestData.Floats(new Random(t.Tokens + 1), t.TableLength);
        using var scoreBias = t.Build(table);
        using var mask = t.Mask();
        double Value(int b, int h, int q, int k) => t.Index(b, h, q, k) is var i and >= 0 ? table[i] : 0.0;
        var (expected, actual) = RunFloat32(data, mask, new BlockSparseOptions { Bias = scoreBias, Backend = backend }, t.Allows, Value, t.Index, table.Length, t.Tokens);
        MaskedAssert.Within(expected, actual, Tolerance.Float32Gradient, "d(table)");
        Assert.That(actual.Count(x => Math.Abs(x) > 1e-4), Is.GreaterThan(table.Length / 2), "most table entries receive a gradient");
    }

    [TestCase(4002)]
    [TestCase(4005)]
    public void TheReferenceBackendReturnsTheOracle(int seed)
    {
        var c = RandomMaskCase.Create(seed);
        var bias = DenseBiasCase.Create(new Random(seed + 3), c.Shape);
        using var scoreBias = bias.Build();
        using var mask = c.Mask();
        var (expected, actual) = RunFloat32(c.Data, mask, c.Options("reference") with { Bias = scoreBias }, c.Allows, bias.Value, bias.Index, bias.Values.Length, seed);
        Assert.That(actual, Is.EqualTo(expected.Select(x => (float)x)).AsCollection);
    }

    [TestCase(4001)]
    [TestCase(4004)]
    [TestCase(4007)]
    public void Float16StorageGradientMatchesTheOracle(int seed)
    {
        var c = RandomMaskCase.Create(seed);
        var bias = DenseBiasCase.Create(new Random(seed + 3), c.Shape);
        using var scoreBias = bias.Build();
        using var mask = c.Mask();
        var options = c.Options() with { Bias = scoreBias };
        var (q, k, v) = (BlockSparseKernelTests.ToHalf(c.Data.Query), BlockSparseKernelTests.ToHalf(c.Data.Key), BlockSparseKernelTests.ToHalf(c.Data.Value));
        var output = new Half[c.Data.OutputLength];
        var lse = new float[c.Data.LseLength];
        BlockSparseAttention.Forward(q, k, v, mask, c.Shape, options, output, lse);
        var outputGrad = BlockSparseKernelTests.ToHalf(TestData.Floats(new Random(seed + 7), c.Data.OutputLength));
        var (dq, dk, dv) = (new Half[q.Length], new Half[k.Length], new Half[v.Length]);
        var dBias = new float[bias.Values.Length];
        BlockSparseAttention.Backward(q, k, v, output, lse, outputGrad, mask, c.Shape, options, dq, dk, dv, dBias);

        // The oracle sees the half-rounded inputs, as the kernel does.
        var expected = ReferenceAttention.DenseMaskedBiasGradient(
            c.Data.Dims(), TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v), TestData.ToDouble(outputGrad),
            c.Allows, bias.Value, bias.Index, bias.Values.Length);
        MaskedAssert.Within(expected, dBias, Tolerance.Float16Gradient, $"d(bias) {bias}, {c}");
    }

    [TestCaseSource(nameof(TableCases))]
    public void BFloat16StorageGradientMatchesTheOracle(TableCase t)
    {
        static ushort[] Bits(float[] x) => [.. x.Select(BFloat16Conversions.FromSingle)];
        static float[] Widen(ushort[] x) => [.. x.Select(BFloat16Conversions.ToSingle)];
        var data = MaskedCase.Create(new Random(t.Tokens), t.Shape(heads: 2, headDim: 4));
        var table = TestData.Floats(new Random(t.Tokens + 1), t.TableLength);
        using var scoreBias = t.Build(table);
        using var mask = t.Mask();
        var options = new BlockSparseOptions { Bias = scoreBias, Backend = "fused" };
        var (q, k, v) = (Bits(data.Query), Bits(data.Key), Bits(data.Value));
        var output = new ushort[data.OutputLength];
        var lse = new float[data.LseLength];
        BlockSparseAttention.ForwardBFloat16(q, k, v, mask, data.Shape, options, output, lse);
        var outputGrad = Bits(TestData.Floats(new Random(5), data.OutputLength));
        var (dq, dk, dv) = (new ushort[q.Length], new ushort[k.Length], new ushort[v.Length]);
        var dTable = new float[table.Length];
        BlockSparseAttention.BackwardBFloat16(q, k, v, output, lse, outputGrad, mask, data.Shape, options, dq, dk, dv, dTable);
        double Value(int b, int h, int qi, int ki) => t.Index(b, h, qi, ki) is var i and >= 0 ? table[i] : 0.0;
        var expected = ReferenceAttention.DenseMaskedBiasGradient(
            data.Dims(), TestData.ToDouble(Widen(q)), TestData.ToDouble(Widen(k)), TestData.ToDouble(Widen(v)), TestData.ToDouble(Widen(outputGrad)),
            t.Allows, Value, t.Index, table.Length);
        MaskedAssert.Within(expected, dTable, Tolerance.BFloat16Gradient, "d(table)");

        // The bf16 device-tensor entry point gives the same bits.
        var device = AttentionDevice.Default;
        using var tq = device.Upload<ushort>(q, q.Length);
        using var tk = device.Upload<ushort>(k, k.Length);
        using var tv = device.Upload<ushort>(v, v.Length);
        using var to = device.Upload<ushort>(output, output.Length);
        using var tl = device.Upload<float>(lse, lse.Length);
        using var tdO = device.Upload<ushort>(outputGrad, outputGrad.Length);
        using var tdq = device.Allocate<ushort>(q.Length);
        using var tdk = device.Allocate<ushort>(k.Length);
        using var tdv = device.Allocate<ushort>(v.Length);
        using var tdTable = device.Allocate<float>(table.Length);
        BlockSparseAttention.BackwardBFloat16(tq, tk, tv, to, tl, tdO, mask, data.Shape, options, tdq, tdk, tdv, biasGradient: tdTable);
        device.Synchronize();
        Assert.That(tdTable.ToArray(), Is.EqualTo(dTable), "device and host bf16 d(table)");
    }

    [TestCase(4006)]
    [TestCase(4011)]
    public void TheBiasGradientIsBitwiseDeterministicAndLeavesTheOtherGradientsAlone(int seed)
    {
        var c = RandomMaskCase.Create(seed);
        var bias = DenseBiasCase.Create(new Random(seed + 3), c.Shape);
        using var scoreBias = bias.Build();
        using var mask = c.Mask();
        var options = c.Options() with { Bias = scoreBias };
        var output = new float[c.Data.OutputLength];
        var lse = new float[c.Data.LseLength];
        BlockSparseAttention.Forward(c.Data.Query, c.Data.Key, c.Data.Value, mask, c.Shape, options, output, lse);
        var outputGrad = TestData.Floats(new Random(seed), c.Data.OutputLength);

        (float[] Dq, float[] Dk, float[] Dv, float[] DBias) Run(bool withBias)
        {
            var (dq, dk, dv) = (new float[c.Data.Query.Length], new float[c.Data.Key.Length], new float[c.Data.Value.Length]);
            var dBias = withBias ? Enumerable.Repeat(float.NaN, bias.Values.Length).ToArray() : [];
            BlockSparseAttention.Backward(c.Data.Query, c.Data.Key, c.Data.Value, output, lse, outputGrad, mask, c.Shape, options, dq, dk, dv, dBias);
            return (dq, dk, dv, dBias);
        }

        var first = Run(true);
        var second = Run(true);
        var without = Run(false);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(second.DBias, Is.EqualTo(first.DBias).AsCollection, $"d(bias) {bias}");
            Assert.That(first.DBias, Has.None.NaN, "every bias value is written (0 where no allowed pair reads it)");
            Assert.That(first.DBias.Count(x => x != 0), Is.GreaterThan(0), "some gradient flows");
            Assert.That(without.Dq, Is.EqualTo(first.Dq).AsCollection, "dQ");
            Assert.That(without.Dk, Is.EqualTo(first.Dk).AsCollection, "dK");
            Assert.That(without.Dv, Is.EqualTo(first.Dv).AsCollection, "dV");
        }
    }

    [TestCaseSource(nameof(TableCases))]
    public void TheTableGradientIsBitwiseDeterministic(TableCase t)
    {
        var data = MaskedCase.Create(new Random(t.Tokens), t.Shape(heads: 2, headDim: 4));
        var table = TestData.Floats(new Random(t.Tokens + 1), t.TableLength);
        using var scoreBias = t.Build(table);
        using var mask = t.Mask();
        var options = new BlockSparseOptions { Bias = scoreBias, Backend = "fused" };
        var output = new float[data.OutputLength];
        var lse = new float[data.LseLength];
        BlockSparseAttention.Forward(data.Query, data.Key, data.Value, mask, data.Shape, options, output, lse);
        var outputGrad = TestData.Floats(new Random(2), data.OutputLength);
        float[] Run()
        {
            var (dq, dk, dv) = (new float[data.Query.Length], new float[data.Key.Length], new float[data.Value.Length]);
            var dTable = new float[table.Length];
            BlockSparseAttention.Backward(data.Query, data.Key, data.Value, output, lse, outputGrad, mask, data.Shape, options, dq, dk, dv, dTable);
            return dTable;
        }

        var first = Run();
        var second = Run();
        Assert.That(second, Is.EqualTo(first).AsCollection);
        Assert.That(first.Count(x => x != 0), Is.GreaterThan(table.Length / 2), "most table entries receive a gradient");
    }

    [Test]
    public void DeviceTensorsGiveTheHostBiasGradient()
    {
        var t = new TableCase([12], [3], [2], 2, 2);
        var data = MaskedCase.Create(new Random(3), t.Shape(heads: 2, headDim: 4));
        var table = TestData.Floats(new Random(4), t.TableLength);
        using var scoreBias = t.Build(table);
        using var mask = t.Mask();
        var options = new BlockSparseOptions { Bias = scoreBias, Backend = "fused" };
        var output = new float[data.OutputLength];
        var lse = new float[data.LseLength];
        BlockSparseAttention.Forward(data.Query, data.Key, data.Value, mask, data.Shape, options, output, lse);
        var outputGrad = TestData.Floats(new Random(5), data.OutputLength);
        var (dq, dk, dv) = (new float[data.Query.Length], new float[data.Key.Length], new float[data.Value.Length]);
        var dTable = new float[table.Length];
        BlockSparseAttention.Backward(data.Query, data.Key, data.Value, output, lse, outputGrad, mask, data.Shape, options, dq, dk, dv, dTable);

        var device = AttentionDevice.Default;
        using var q = device.Upload<float>(data.Query, data.Query.Length);
        using var k = device.Upload<float>(data.Key, data.Key.Length);
        using var v = device.Upload<float>(data.Value, data.Value.Length);
        using var o = device.Upload<float>(output, output.Length);
        using var l = device.Upload<float>(lse, lse.Length);
        using var dO = device.Upload<float>(outputGrad, outputGrad.Length);
        using var gq = device.Allocate<float>(dq.Length);
        using var gk = device.Allocate<float>(dk.Length);
        using var gv = device.Allocate<float>(dv.Length);
        using var gBias = device.Allocate<float>(table.Length);
        BlockSparseAttention.Backward(q, k, v, o, l, dO, mask, data.Shape, options, gq, gk, gv, biasGradient: gBias);
        Assert.That(gBias.ToArray(), Is.EqualTo(dTable).AsCollection);
        Assert.That(gq.ToArray(), Is.EqualTo(dq).AsCollection);
        Assert.That(gk.ToArray(), Is.EqualTo(dk).AsCollection);

        using var wrong = device.Allocate<float>(table.Length + 1);
        var ex = Assert.Throws<ArgumentException>(() => BlockSparseAttention.Backward(q, k, v, o, l, dO, mask, data.Shape, options, gq, gk, gv, biasGradient: wrong));
        Assert.That(ex!.ParamName, Is.EqualTo("biasGradient"));
        Assert.That(ex.Message, Does.Contain($"needs exactly {table.Length}"));
    }

    public static IEnumerable<TestCaseData> InvalidGradients()
    {
        var shape = new BlockSparseShape(2, 6, 6, 2, 3);
        var c = MaskedCase.Create(new Random(1), shape);
        var mask = BlockMasks.SlidingWindow(6, 6, 2, 2, 4, 4);
        var dense = ScoreBias.Dense(new float[2 * 6 * 6], 6, 6, heads: 2);
        var table = ScoreBias.RelativePosition(new float[2 * 5], 2, 6, 3);
        var output = new float[c.OutputLength];
        var lse = new float[c.LseLength];
        void Run(ScoreBias? bias, float[] biasGradient, string backend = "fused")
            => BlockSparseAttention.Backward(
                c.Query, c.Key, c.Value, output, lse, output, mask, shape, new BlockSparseOptions { Bias = bias, Backend = backend },
                new float[c.Query.Length], new float[c.Key.Length], new float[c.Value.Length], biasGradient);
        TestCaseData Case(string name, Action call, string fragment) => new TestCaseData(call, fragment).SetName($"{{m}}({name})");
        yield return Case("dense, one short", () => Run(dense, new float[(2 * 6 * 6) - 1]), "the shape needs exactly 72");
        yield return Case("dense, one long", () => Run(dense, new float[(2 * 6 * 6) + 1]), "the shape needs exactly 72");
        yield return Case("dense, reference backend", () => Run(dense, new float[3], "reference"), "the shape needs exactly 72");
        yield return Case("table, one short", () => Run(table, new float[9]), "the shape needs exactly 10");
        yield return Case("table, the dense length", () => Run(table, new float[72]), "heads=2, 2·K−1 per axis");
        yield return Case("gradient without a bias", () => Run(null, new float[72]), "options.Bias is null");
    }

    [TestCaseSource(nameof(InvalidGradients))]
    public void InvalidBiasGradientsThrowBeforeAnyWork(Action call, string fragment)
    {
        var ex = Assert.Throws<ArgumentException>(() => call());
        Assert.That(ex!.ParamName, Is.EqualTo("biasGradient"), ex.Message);
        Assert.That(ex.Message, Does.Contain(fragment));
    }

    [Test]
    public void ABiasGradientOverlappingAnInputIsRefused()
    {
        var shape = new BlockSparseShape(1, 4, 4, 1, 4);
        var c = MaskedCase.Create(new Random(1), shape);
        using var mask = BlockMasks.SlidingWindow(4, 4, 1, 1, 2, 2);
        using var bias = ScoreBias.Dense(new float[16], 4, 4);
        var output = new float[c.OutputLength];
        var lse = new float[c.LseLength];
        var ex = Assert.Throws<ArgumentException>(() => BlockSparseAttention.Backward(
            c.Query, c.Key, c.Value, output, lse, output, mask, shape, new BlockSparseOptions { Bias = bias },
            new float[c.Query.Length], new float[c.Key.Length], new float[c.Value.Length], c.Query.AsSpan(0, 16)));
        Assert.That(ex!.Message, Does.Contain("biasGradient overlaps query"));
    }

    /// <summary>Runs the float32 forward and backward with a bias gradient; returns the oracle's and the call's d(bias).</summary>
    private static (double[] Expected, float[] Actual) RunFloat32(
        MaskedCase data, BlockMask mask, BlockSparseOptions options, Func<int, int, int, int, bool> allows,
        Func<int, int, int, int, double> value, Func<int, int, int, int, long> index, int length, int seed)
    {
        var output = new float[data.OutputLength];
        var lse = new float[data.LseLength];
        BlockSparseAttention.Forward(data.Query, data.Key, data.Value, mask, data.Shape, options, output, lse);
        var outputGrad = TestData.Floats(new Random(seed + 7), data.OutputLength);
        var (dq, dk, dv) = (new float[data.Query.Length], new float[data.Key.Length], new float[data.Value.Length]);
        var dBias = new float[length];
        BlockSparseAttention.Backward(data.Query, data.Key, data.Value, output, lse, outputGrad, mask, data.Shape, options, dq, dk, dv, dBias);
        var expected = ReferenceAttention.DenseMaskedBiasGradient(
            data.Dims(), TestData.ToDouble(data.Query), TestData.ToDouble(data.Key), TestData.ToDouble(data.Value), TestData.ToDouble(outputGrad),
            allows, value, index, length);
        return (expected, dBias);
    }

    /// <summary>Central differences of L = Σ dO ∘ O in every bias value against the oracle's d(bias).</summary>
    private static void AssertOracleMatchesFiniteDifferences(
        MaskedCase data, Func<int, int, int, int, bool> allows, double[] values, Func<int, int, int, int, long> index)
    {
        var dims = data.Dims();
        var (q, k, v) = (TestData.ToDouble(data.Query), TestData.ToDouble(data.Key), TestData.ToDouble(data.Value));
        var outputGrad = TestData.Doubles(new Random(11), data.OutputLength);
        double Value(int b, int h, int qi, int ki) => index(b, h, qi, ki) is var i and >= 0 ? values[i] : 0.0;
        double Loss() => ReferenceAttention.DenseMasked(dims, q, k, v, allows, Value).Output.Zip(outputGrad, (o, g) => o * g).Sum();
        var analytic = ReferenceAttention.DenseMaskedBiasGradient(dims, q, k, v, outputGrad, allows, Value, index, values.Length);
        const double h = 1e-5;
        for (var i = 0; i < values.Length; i++)
        {
            var saved = values[i];
            values[i] = saved + h;
            var up = Loss();
            values[i] = saved - h;
            var down = Loss();
            values[i] = saved;
            var numeric = (up - down) / (2 * h);
            Assert.That(analytic[i], Is.EqualTo(numeric).Within(1e-7 + (1e-6 * Math.Abs(numeric))), $"d(bias)[{i}]");
        }

        Assert.That(analytic.Count(x => Math.Abs(x) > 1e-6), Is.GreaterThan(values.Length / 4), "the gradient is not trivially zero");
    }
}

/// <summary>A random dense bias <c>[batches, heads, Nq, Nk]</c> with batches ∈ {1, B} and heads ∈ {1, H}; its index written here, not taken from the library.</summary>
internal sealed record DenseBiasCase(float[] Values, int Batches, int Heads, int QueryTokens, int KeyTokens)
{
    public static DenseBiasCase Create(Random rng, BlockSparseShape shape)
    {
        var batches = rng.Next(2) == 0 ? 1 : shape.Batch;
        var heads = rng.Next(2) == 0 ? 1 : shape.Heads;
        var values = TestData.Floats(rng, (long)batches * heads * shape.QueryTokens * shape.KeyTokens).Select(x => 2 * x).ToArray();
        return new DenseBiasCase(values, batches, heads, shape.QueryTokens, shape.KeyTokens);
    }

    public ScoreBias Build() => ScoreBias.Dense(Values, QueryTokens, KeyTokens, Heads, Batches);

    public long Index(int b, int h, int q, int k)
    {
        var bb = Batches == 1 ? 0 : b;
        var hh = Heads == 1 ? 0 : h;
        return ((((((long)bb * Heads) + hh) * QueryTokens) + q) * KeyTokens) + k;
    }

    public double Value(int b, int h, int q, int k) => Values[Index(b, h, q, k)];

    public override string ToString() => $"dense [{Batches}, {Heads}, {QueryTokens}, {KeyTokens}]";
}

/// <summary>
/// NATTEN's RPB on the neighborhood pattern (stride 1, non-causal): the mask and the table index as
/// independent predicates over row-major grid coordinates.
/// </summary>
public sealed record TableCase(int[] Extents, int[] Kernel, int[] Dilation, int TableHeads, int Batch, bool Full = false)
{
    public int Tokens => Extents.Aggregate(1, (a, b) => a * b);

    public int TableLength => TableHeads * Kernel.Aggregate(1, (a, k) => a * ((2 * k) - 1));

    public BlockSparseShape Shape(int heads, int headDim) => new(Batch, Tokens, Tokens, heads, headDim);

    public ScoreBias Build(float[] table)
        => ScoreBias.RelativePosition(table, TableHeads, AxisValues.PerAxis(Extents), AxisValues.PerAxis(Kernel), AxisValues.PerAxis(Dilation));

    public BlockMask Mask()
        => Full
            ? BlockMask.FromBlocks(Enumerable.Repeat(true, ((Tokens + 3) / 4) * ((Tokens + 4) / 5)).ToArray(), Tokens, Tokens, 4, 5)
            : BlockMasks.Neighborhood(
                AxisValues.PerAxis(Extents), new NeighborhoodAttentionOptions(AxisValues.PerAxis(Kernel)) { Dilation = AxisValues.PerAxis(Dilation) }, 4, 5);

    /// <summary>NATTEN's window as the Reference defines it (stride 1, non-causal), or every pair.</summary>
    public bool Allows(int b, int h, int q, int k) => Full || Problem.Allows(q, k);

    private NeighborhoodProblem Problem => new()
    {
        Batch = 1, Spatial = Extents, Heads = 1, KvHeads = 1, HeadDim = 1, ValueDim = 1,
        KernelSize = Kernel, Stride = [.. Kernel.Select(_ => 1)], Dilation = Dilation, Causal = new bool[Extents.Length],
    };

    /// <summary>Table index <c>[tableHead, (j − i) / d + K − 1 per axis]</c>, or −1 when beyond the table.</summary>
    public long Index(int b, int h, int q, int k)
    {
        var (qc, kc) = (Coordinates(q), Coordinates(k));
        long index = TableHeads == 1 ? 0 : h;
        for (var a = 0; a < Extents.Length; a++)
        {
            var r = ((kc[a] - qc[a]) / Dilation[a]) + Kernel[a] - 1;
            if (r < 0 || r >= (2 * Kernel[a]) - 1)
            {
                return -1;
            }

            index = (index * ((2 * Kernel[a]) - 1)) + r;
        }

        return index;
    }

    private int[] Coordinates(int token)
    {
        var c = new int[Extents.Length];
        for (var a = Extents.Length - 1; a >= 0; a--)
        {
            c[a] = token % Extents[a];
            token /= Extents[a];
        }

        return c;
    }
}
