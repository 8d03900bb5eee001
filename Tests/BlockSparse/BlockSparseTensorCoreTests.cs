using Natten.BlockSparse;
using Natten.Kernels.Runtime;
using Natten.Reference;
using Natten.Tests.Support;
using Natten.Validation;

namespace Natten.Tests.BlockSparse;

/// <summary>
/// The tensor-core block-sparse forward (fp16 / bf16 storage, D % 16 == 0, Dv % 8 == 0) on the default
/// accelerator — the CPU accelerator here, where the mma fragments go through the lane-exact emulation —
/// against the Reference's dense-mask oracle by FlashAttention's rule: random block masks with full,
/// partial and empty blocks and empty rows, short last blocks, GQA, D ≠ Dv, per-head and per-batch masks,
/// one and two warps, a dense bias and NATTEN's RPB, host spans and device tensors. Every accuracy case
/// first asserts that dispatch takes the tensor-core path. Shapes are tiny: the emulation synchronises the
/// group twice per mma.
/// </summary>
public sealed class BlockSparseTensorCoreTests
{
    /// <summary>One tensor-core problem: sizes, blocks, mask planes and (optionally) a requested work split.</summary>
    public sealed record Spec(
        string Name, bool BFloat16, int Batch, int QueryTokens, int KeyTokens, int Heads, int KvHeads, int HeadDim, int ValueDim,
        int QueryBlock, int KeyBlock, int MaskHeads, int MaskBatches, BlockSparseTiling? Tiling = null, int Seed = 1)
    {
        public override string ToString() => Name;
    }

    public static IEnumerable<TestCaseData> Specs()
    {
        Spec[] specs =
        [
            new("fp16 GQA, D 16 / Dv 8, blocks 16x8, short last blocks, per-head mask", false, 1, 37, 29, 2, 1, 16, 8, 16, 8, 2, 1, Seed: 11),
            new("bf16 D 32 / Dv 16, blocks 8x16, per-batch mask", true, 2, 20, 33, 1, 1, 32, 16, 8, 16, 1, 2, Seed: 12),
            new("fp16 two warps, tiling 32x32, D 16 / Dv 24", false, 1, 40, 45, 1, 1, 16, 24, 32, 32, 1, 1, new BlockSparseTiling(32, 32), Seed: 13),
            new("bf16 odd blocks 5x13, D 16 / Dv 16", true, 1, 23, 27, 2, 2, 16, 16, 5, 13, 1, 1, Seed: 14),
        ];
        return specs.Select(s => new TestCaseData(s).SetName($"{{m}}({s.Name})"));
    }

    [TestCaseSource(nameof(Specs))]
    public void HostSpansFollowTheToleranceRule(Spec spec)
    {
        var c = Case(spec);
        using var mask = c.Mask();
        AssertTensorCorePath(c, mask, spec.BFloat16, default);
        var (output, lse) = RunHost(c, mask, spec.BFloat16, c.Options());
        AssertRule(c, spec.BFloat16, output, lse, null);
    }

    /// <summary>Random tensor-core problems: block sizes 1…64, one to four warps, KV sub-tiles of 16 or 32, both formats.</summary>
    public static IEnumerable<TestCaseData> RandomSpecs()
        => Enumerable.Range(101, TestData.SweepCount(8, 120)).Select(seed =>
        {
            var rng = new Random(seed);
            int[] blocks = [1, 3, 5, 8, 13, 16, 32, 48, 64];
            BlockSparseTiling?[] tilings = [null, null, new(16, 16), new(32, 16), new(16, 32), new(48, 32), new(64, 16)];
            var kvHeads = rng.Next(1, 3);
            var heads = kvHeads * rng.Next(1, 3);
            var batch = rng.Next(1, 3);
            var headDim = rng.Next(2) == 0 ? 16 : 32;
            int[] valueDims = [8, 16, 24, 32];
            var spec = new Spec(
                $"seed {seed}", rng.Next(2) == 0, batch, rng.Next(1, 70), rng.Next(1, 70), heads, kvHeads, headDim, valueDims[rng.Next(valueDims.Length)],
                blocks[rng.Next(blocks.Length)], blocks[rng.Next(blocks.Length)], rng.Next(2) == 0 ? 1 : heads, rng.Next(3) == 0 ? batch : 1,
                tilings[rng.Next(tilings.Length)], seed);
            return new TestCaseData(spec).SetName($"{{m}}(seed {seed})");
        });

    [TestCaseSource(nameof(RandomSpecs))]
    public void RandomProblemsFollowTheToleranceRule(Spec spec)
    {
        var c = Case(spec);
        using var mask = c.Mask();
        AssertTensorCorePath(c, mask, spec.BFloat16, default);
        var (output, lse) = RunHost(c, mask, spec.BFloat16, c.Options());
        AssertRule(c, spec.BFloat16, output, lse, null, requireEmptyRow: false);
    }

    [TestCase(false)]
    [TestCase(true)]
    public void DeviceTensorsFollowTheToleranceRuleAndEqualTheSpanPath(bool bfloat16)
    {
        var spec = new Spec("device", bfloat16, 1, 26, 21, 2, 1, 16, 8, 16, 8, 2, 1, Seed: 21);
        var c = Case(spec);
        using var mask = c.Mask();
        AssertTensorCorePath(c, mask, bfloat16, default);
        var (output, lse) = RunDevice(c, mask, bfloat16);
        AssertRule(c, bfloat16, output, lse, null);
        var (hostOutput, hostLse) = RunHost(c, mask, bfloat16, c.Options());
        Assert.That(output, Is.EqualTo(hostOutput).AsCollection, "device output = span output");
        Assert.That(lse, Is.EqualTo(hostLse).AsCollection, "device LSE = span LSE");
    }

    [Test]
    public void DenseBiasFollowsTheToleranceRule()
    {
        var spec = new Spec("dense bias", false, 1, 19, 24, 2, 1, 16, 16, 8, 8, 2, 1, Seed: 31);
        var c = Case(spec);
        var (nq, nk) = (spec.QueryTokens, spec.KeyTokens);
        var values = TestData.Floats(new Random(32), spec.Heads * nq * nk).Select(x => 3 * x).ToArray();
        using var bias = ScoreBias.Dense(values, nq, nk, spec.Heads);
        double Bias(int b, int h, int q, int k) => values[(((h * nq) + q) * nk) + k];
        using var mask = c.Mask();
        var options = c.Options() with { Bias = bias };
        AssertTensorCorePath(c, mask, false, options);
        var (output, lse) = RunHost(c, mask, false, options);
        AssertRule(c, false, output, lse, Bias);
    }

    [Test]
    public void RelativePositionBiasFollowsTheToleranceRule()
    {
        // 1D, 30 tokens, K = 7: RPB reaches |j − i| ≤ 6; the random block mask has full and partial blocks.
        const int n = 30, heads = 2, kernel = 7;
        var spec = new Spec("rpb", true, 1, n, n, heads, heads, 16, 8, 8, 8, heads, 1, Seed: 41);
        var c = Case(spec);
        var table = TestData.Floats(new Random(42), heads * ((2 * kernel) - 1));
        using var bias = ScoreBias.RelativePosition(table, heads, n, kernel);
        double Bias(int b, int h, int q, int k) => Math.Abs(k - q) < kernel ? table[(h * ((2 * kernel) - 1)) + k - q + kernel - 1] : 0.0;
        using var mask = c.Mask();
        var options = c.Options() with { Bias = bias };
        AssertTensorCorePath(c, mask, true, options);
        var (output, lse) = RunHost(c, mask, true, options);
        AssertRule(c, true, output, lse, Bias);
    }

    [Test]
    public void DispatchTakesTheTensorCorePathOnlyWhenItFits()
    {
        var device = DeviceRuntime.Default;
        using var mask = BlockMask.FromBlocks([true, false, true, true], 32, 32, 16, 16);
        BlockSparseTensorCoreTileProbe(device, mask, 16, 8, ElementType.Float16, null, expectTensorCore: true);
        BlockSparseTensorCoreTileProbe(device, mask, 32, 16, ElementType.BFloat16, new BlockSparseTiling(16, 32), expectTensorCore: true);
        BlockSparseTensorCoreTileProbe(device, mask, 12, 8, ElementType.Float16, null, expectTensorCore: false);
        BlockSparseTensorCoreTileProbe(device, mask, 16, 12, ElementType.BFloat16, null, expectTensorCore: false);
        BlockSparseTensorCoreTileProbe(device, mask, 16, 8, ElementType.Float32, null, expectTensorCore: false);
        BlockSparseTensorCoreTileProbe(device, mask, 16, 8, ElementType.Float16, new BlockSparseTiling(5, 3), expectTensorCore: false);
    }

    [Test]
    public void HeadDim12FallsBackToTheFloat32MathKernelAndStaysCorrect()
    {
        var spec = new Spec("D 12 fallback", false, 1, 21, 18, 1, 1, 12, 8, 8, 8, 1, 1, Seed: 51);
        var c = Case(spec);
        using var mask = c.Mask();
        var problem = ProblemValidator.ValidateBlockSparse(c.Shape, mask, c.Options(), ElementType.Float16);
        Assert.That(FusedBlockSparseBackend.TensorCoreTile(DeviceRuntime.Default, problem), Is.Null, "D = 12 must not take the tensor-core path");
        var (output, lse) = RunHost(c, mask, false, c.Options());
        AssertRule(c, false, output, lse, null);
    }

    private static void BlockSparseTensorCoreTileProbe(
        ComputeDevice device, BlockMask mask, int headDim, int valueDim, ElementType type, BlockSparseTiling? tiling, bool expectTensorCore)
    {
        var shape = new BlockSparseShape(1, 32, 32, 1, headDim) { ValueDim = valueDim };
        var problem = ProblemValidator.ValidateBlockSparse(shape, mask, new BlockSparseOptions { Tiling = tiling }, type);
        var tile = FusedBlockSparseBackend.TensorCoreTile(device, problem);
        Assert.That(tile.HasValue, Is.EqualTo(expectTensorCore), $"D={headDim}, Dv={valueDim}, {type}, tiling {tiling?.ToString() ?? "default"}");
    }

    internal static void AssertTensorCorePath(RandomMaskCase c, BlockMask mask, bool bfloat16, BlockSparseOptions options)
    {
        options = options == default ? c.Options() : options;
        var problem = ProblemValidator.ValidateBlockSparse(c.Shape, mask, options, bfloat16 ? ElementType.BFloat16 : ElementType.Float16);
        Assert.That(FusedBlockSparseBackend.TensorCoreTile(DeviceRuntime.Default, problem), Is.Not.Null, "this problem must take the tensor-core path");
    }

    /// <summary>The forward on device tensors of the default accelerator (fp16 or bf16 storage), outputs widened to float.</summary>
    internal static (float[] Output, float[] Lse) RunDevice(RandomMaskCase c, BlockMask mask, bool bfloat16)
    {
        var device = AttentionDevice.Default;
        float[] output;
        float[] lse;
        if (bfloat16)
        {
            var (q, k, v) = (Bf16(c.Data.Query), Bf16(c.Data.Key), Bf16(c.Data.Value));
            using var dq = device.Upload<ushort>(q, q.Length);
            using var dk = device.Upload<ushort>(k, k.Length);
            using var dv = device.Upload<ushort>(v, v.Length);
            using var o = device.Allocate<ushort>((int)c.Data.OutputLength);
            using var l = device.Allocate<float>((int)c.Data.LseLength);
            BlockSparseAttention.ForwardBFloat16(dq, dk, dv, mask, c.Shape, c.Options(), o, l);
            (output, lse) = (WidenBf16(o.ToArray()), l.ToArray());
        }
        else
        {
            var (q, k, v) = (ToHalf(c.Data.Query), ToHalf(c.Data.Key), ToHalf(c.Data.Value));
            using var dq = device.Upload<Half>(q, q.Length);
            using var dk = device.Upload<Half>(k, k.Length);
            using var dv = device.Upload<Half>(v, v.Length);
            using var o = device.Allocate<Half>((int)c.Data.OutputLength);
            using var l = device.Allocate<float>((int)c.Data.LseLength);
            BlockSparseAttention.Forward(dq, dk, dv, mask, c.Shape, c.Options(), o, l);
            (output, lse) = (FromHalf(o.ToArray()), l.ToArray());
        }

        return (output, lse);
    }

    internal static (float[] Output, float[] Lse) RunHost(RandomMaskCase c, BlockMask mask, bool bfloat16, BlockSparseOptions options)
    {
        var lse = new float[c.Data.LseLength];
        if (bfloat16)
        {
            var output = new ushort[c.Data.OutputLength];
            BlockSparseAttention.ForwardBFloat16(Bf16(c.Data.Query), Bf16(c.Data.Key), Bf16(c.Data.Value), mask, c.Shape, options, output, lse);
            return (WidenBf16(output), lse);
        }

        var half = new Half[c.Data.OutputLength];
        BlockSparseAttention.Forward(ToHalf(c.Data.Query), ToHalf(c.Data.Key), ToHalf(c.Data.Value), mask, c.Shape, options, half, lse);
        return (FromHalf(half), lse);
    }

    /// <summary>
    /// Reference and plain baseline see the inputs rounded to the storage format; the plain output is rounded
    /// like the kernel's (the kernel also rounds P before P·V, as FlashAttention-2 does, which the format's floor covers).
    /// Empty rows: LSE −∞ exactly and output 0.
    /// </summary>
    internal static void AssertRule(RandomMaskCase c, bool bfloat16, float[] output, float[] lse, Func<int, int, int, int, double>? bias, bool requireEmptyRow = true)
    {
        float[] Round(float[] x) => bfloat16 ? WidenBf16(Bf16(x)) : FromHalf(ToHalf(x));
        var (q, k, v) = (Round(c.Data.Query), Round(c.Data.Key), Round(c.Data.Value));
        var dims = c.Data.Dims();
        var expected = ReferenceAttention.DenseMasked(dims, TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v), c.Allows, bias);
        var plain = PlainMaskedAttention.Forward(dims, q, k, v, c.Allows, bias);
        var floor = bfloat16 ? Tolerance.BFloat16Floor : Tolerance.Float16Floor;
        MaskedAssert.Rule(expected.Output, output, Round(plain.Output), floor, $"output, {c}");
        MaskedAssert.Rule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, $"lse, {c}");

        var empty = 0;
        var s = c.Shape;
        for (var b = 0; b < s.Batch; b++)
        {
            for (var t = 0; t < s.QueryTokens; t++)
            {
                for (var h = 0; h < s.Heads; h++)
                {
                    if (Enumerable.Range(0, s.KeyTokens).Any(j => c.Allows(b, h, t, j)))
                    {
                        continue;
                    }

                    empty++;
                    var row = ((((long)b * s.QueryTokens) + t) * s.Heads) + h;
                    Assert.That(output.AsSpan((int)(row * s.ValueDim), s.ValueDim).ToArray(), Is.All.Zero, $"empty row {row}");
                }
            }
        }

        if (requireEmptyRow)
        {
            Assert.That(empty, Is.GreaterThan(0), "the case has rows with no allowed key");
        }
    }

    /// <summary>A random block mask built block by block (empty, full, half and a tenth of the pairs), some rows emptied.</summary>
    internal static RandomMaskCase Case(Spec spec)
    {
        var rng = new Random(spec.Seed);
        var shape = new BlockSparseShape(spec.Batch, spec.QueryTokens, spec.KeyTokens, spec.Heads, spec.HeadDim) { KvHeads = spec.KvHeads, ValueDim = spec.ValueDim };
        var (nq, nk) = (spec.QueryTokens, spec.KeyTokens);
        var dense = new bool[(long)spec.MaskBatches * spec.MaskHeads * nq * nk];
        for (var plane = 0; plane < spec.MaskBatches * spec.MaskHeads; plane++)
        {
            var kinds = 0;
            for (var q0 = 0; q0 < nq; q0 += spec.QueryBlock)
            {
                for (var k0 = 0; k0 < nk; k0 += spec.KeyBlock)
                {
                    // Cycle through the kinds first so every plane has each of them, then draw at random.
                    var kind = kinds < 4 ? kinds++ : rng.Next(4);
                    for (var q = q0; q < Math.Min(q0 + spec.QueryBlock, nq); q++)
                    {
                        for (var k = k0; k < Math.Min(k0 + spec.KeyBlock, nk); k++)
                        {
                            dense[((((long)plane * nq) + q) * nk) + k] = kind switch
                            {
                                1 => true,
                                2 => rng.Next(2) == 0,
                                3 => rng.Next(10) == 0,
                                _ => false,
                            };
                        }
                    }
                }
            }

            for (var q = 0; q < nq; q++)
            {
                if (q % 7 == 3 || rng.Next(8) == 0)
                {
                    Array.Fill(dense, false, (int)((((long)plane * nq) + q) * nk), nk);
                }
            }
        }

        var scale = rng.Next(2) == 0 ? 0.3 + rng.NextDouble() : (double?)null;
        return new RandomMaskCase(MaskedCase.Create(rng, shape, scale), dense, spec.MaskBatches, spec.MaskHeads, spec.QueryBlock, spec.KeyBlock, spec.Tiling);
    }

    internal static Half[] ToHalf(float[] x) => [.. x.Select(v => (Half)v)];

    internal static float[] FromHalf(Half[] x) => [.. x.Select(v => (float)v)];

    internal static ushort[] Bf16(float[] x) => [.. x.Select(BFloat16Conversions.FromSingle)];

    internal static float[] WidenBf16(ushort[] x) => [.. x.Select(BFloat16Conversions.ToSingle)];
}
