using Natten.Reference;
using Natten.Tests.Support;

namespace Natten.Tests.BlockSparse;

/// <summary>
/// The fused block-sparse kernels (on the default ILGPU accelerator, the CPU accelerator here) against
/// the Reference's dense-mask oracle on random masks: full/partial/empty mixes, empty rows, odd block
/// sizes, GQA, D ≠ Dv, per-head and per-batch masks, split tiles; float and half storage; determinism.
/// </summary>
public sealed class BlockSparseKernelTests
{
    public static IEnumerable<TestCaseData> Seeds(int quick, int extended, int offset)
        => Enumerable.Range(offset, TestData.SweepCount(quick, extended)).Select(s => new TestCaseData(s).SetName($"{{m}}(seed {s})"));

    public static IEnumerable<TestCaseData> ForwardSeeds() => Seeds(16, 300, 1);

    public static IEnumerable<TestCaseData> BackwardSeeds() => Seeds(10, 200, 1001);

    public static IEnumerable<TestCaseData> HalfSeeds() => Seeds(3, 60, 2001);

    [TestCaseSource(nameof(ForwardSeeds))]
    public void ForwardFloat32FollowsTheToleranceRule(int seed)
    {
        var c = RandomMaskCase.Create(seed);
        var (output, lse) = Forward(c);
        var expected = ReferenceAttention.DenseMasked(
            c.Data.Dims(), TestData.ToDouble(c.Data.Query), TestData.ToDouble(c.Data.Key), TestData.ToDouble(c.Data.Value), c.Allows);
        var plain = PlainMaskedAttention.Forward(c.Data.Dims(), c.Data.Query, c.Data.Key, c.Data.Value, c.Allows);
        MaskedAssert.Rule(expected.Output, output, plain.Output, Tolerance.Float32Floor, $"output, {c}");
        MaskedAssert.Rule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, $"lse, {c}");
        AssertEmptyRowsAreZero(c, output);
    }

    [TestCaseSource(nameof(BackwardSeeds))]
    public void BackwardFloat32MatchesTheReference(int seed)
    {
        var c = RandomMaskCase.Create(seed);
        var (output, lse) = Forward(c);
        var outputGrad = TestData.Floats(new Random(seed + 7), c.Data.OutputLength);
        var (dq, dk, dv) = Backward(c, output, lse, outputGrad);
        var expected = ReferenceAttention.DenseMaskedBackward(
            c.Data.Dims(), TestData.ToDouble(c.Data.Query), TestData.ToDouble(c.Data.Key), TestData.ToDouble(c.Data.Value),
            TestData.ToDouble(outputGrad), c.Allows);
        MaskedAssert.Within(expected.Query, dq, Tolerance.Float32Gradient, $"dQ, {c}");
        MaskedAssert.Within(expected.Key, dk, Tolerance.Float32Gradient, $"dK, {c}");
        MaskedAssert.Within(expected.Value, dv, Tolerance.Float32Gradient, $"dV, {c}");
    }

    [TestCaseSource(nameof(HalfSeeds))]
    public void Float16StorageFollowsTheToleranceRule(int seed)
    {
        var c = RandomMaskCase.Create(seed);
        var (q, k, v) = (ToHalf(c.Data.Query), ToHalf(c.Data.Key), ToHalf(c.Data.Value));
        var (qh, kh, vh) = (FromHalf(q), FromHalf(k), FromHalf(v));
        var output = new Half[c.Data.OutputLength];
        var lse = new float[c.Data.LseLength];
        using var mask = c.Mask();
        BlockSparseAttention.Forward(q, k, v, mask, c.Shape, c.Options(), output, lse);

        // Reference and plain implementation both see the half-rounded inputs; the plain output is rounded to half like the kernel's.
        var dims = c.Data.Dims();
        var expected = ReferenceAttention.DenseMasked(dims, TestData.ToDouble(qh), TestData.ToDouble(kh), TestData.ToDouble(vh), c.Allows);
        var plain = PlainMaskedAttention.Forward(dims, qh, kh, vh, c.Allows);
        MaskedAssert.Rule(expected.Output, FromHalf(output), FromHalf(ToHalf(plain.Output)), Tolerance.Float16Floor, $"output, {c}");
        MaskedAssert.Rule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, $"lse, {c}");

        var outputGrad = ToHalf(TestData.Floats(new Random(seed + 7), c.Data.OutputLength));
        var (dq, dk, dv) = (new Half[q.Length], new Half[k.Length], new Half[v.Length]);
        BlockSparseAttention.Backward(q, k, v, output, lse, outputGrad, mask, c.Shape, c.Options(), dq, dk, dv);
        var grads = ReferenceAttention.DenseMaskedBackward(
            dims, TestData.ToDouble(qh), TestData.ToDouble(kh), TestData.ToDouble(vh), TestData.ToDouble(FromHalf(outputGrad)), c.Allows);
        MaskedAssert.Within(grads.Query, FromHalf(dq), Tolerance.Float16Gradient, $"dQ, {c}");
        MaskedAssert.Within(grads.Key, FromHalf(dk), Tolerance.Float16Gradient, $"dK, {c}");
        MaskedAssert.Within(grads.Value, FromHalf(dv), Tolerance.Float16Gradient, $"dV, {c}");
    }

    [TestCase(3001)]
    [TestCase(3002)]
    public void BFloat16StorageFollowsTheToleranceRule(int seed)
    {
        var c = RandomMaskCase.Create(seed);
        static ushort[] Bits(float[] x) => [.. x.Select(BFloat16Conversions.FromSingle)];
        static float[] Widen(ushort[] x) => [.. x.Select(BFloat16Conversions.ToSingle)];
        var (q, k, v) = (Bits(c.Data.Query), Bits(c.Data.Key), Bits(c.Data.Value));
        var (qw, kw, vw) = (Widen(q), Widen(k), Widen(v));
        var output = new ushort[c.Data.OutputLength];
        var lse = new float[c.Data.LseLength];
        using var mask = c.Mask();
        BlockSparseAttention.ForwardBFloat16(q, k, v, mask, c.Shape, c.Options(), output, lse);
        var dims = c.Data.Dims();
        var expected = ReferenceAttention.DenseMasked(dims, TestData.ToDouble(qw), TestData.ToDouble(kw), TestData.ToDouble(vw), c.Allows);
        var plain = PlainMaskedAttention.Forward(dims, qw, kw, vw, c.Allows);
        MaskedAssert.Rule(expected.Output, Widen(output), Widen(Bits(plain.Output)), Tolerance.BFloat16Floor, $"output, {c}");
        MaskedAssert.Rule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, $"lse, {c}");

        // Gradients of order 1 rounded to bf16 (2^-9 relative): a few bf16 ulps at 1.
        const double gradientTolerance = 2e-2;
        var outputGrad = Bits(TestData.Floats(new Random(seed + 7), c.Data.OutputLength));
        var (dq, dk, dv) = (new ushort[q.Length], new ushort[k.Length], new ushort[v.Length]);
        BlockSparseAttention.BackwardBFloat16(q, k, v, output, lse, outputGrad, mask, c.Shape, c.Options(), dq, dk, dv);
        var grads = ReferenceAttention.DenseMaskedBackward(
            dims, TestData.ToDouble(qw), TestData.ToDouble(kw), TestData.ToDouble(vw), TestData.ToDouble(Widen(outputGrad)), c.Allows);
        MaskedAssert.Within(grads.Query, Widen(dq), gradientTolerance, $"dQ, {c}");
        MaskedAssert.Within(grads.Key, Widen(dk), gradientTolerance, $"dK, {c}");
        MaskedAssert.Within(grads.Value, Widen(dv), gradientTolerance, $"dV, {c}");
    }

    [TestCase(7)]
    [TestCase(12)]
    public void ForwardAndBackwardAreBitwiseDeterministic(int seed)
    {
        var c = RandomMaskCase.Create(seed);
        var (output, lse) = Forward(c);
        var (output2, lse2) = Forward(c);
        var outputGrad = TestData.Floats(new Random(seed), c.Data.OutputLength);
        var first = Backward(c, output, lse, outputGrad);
        var second = Backward(c, output, lse, outputGrad);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(output2, Is.EqualTo(output).AsCollection, "output");
            Assert.That(lse2, Is.EqualTo(lse).AsCollection, "lse");
            Assert.That(second.Dq, Is.EqualTo(first.Dq).AsCollection, "dQ");
            Assert.That(second.Dk, Is.EqualTo(first.Dk).AsCollection, "dK");
            Assert.That(second.Dv, Is.EqualTo(first.Dv).AsCollection, "dV");
        }
    }

    [Test]
    public void AnEmptyMaskGivesZeroOutputMinusInfinityLseAndZeroGradients()
    {
        var shape = new BlockSparseShape(1, 9, 11, 2, 4);
        var c = MaskedCase.Create(new Random(3), shape);
        using var mask = BlockMask.FromDense(new bool[9 * 11], 9, 11, 4, 4);
        Assert.That(mask.BlockCount, Is.Zero);
        var output = Enumerable.Repeat(float.NaN, (int)c.OutputLength).ToArray();
        var lse = new float[c.LseLength];
        BlockSparseAttention.Forward(c.Query, c.Key, c.Value, mask, shape, new BlockSparseOptions { Backend = "fused" }, output, lse);
        Assert.That(output, Is.All.Zero);
        Assert.That(lse, Is.All.EqualTo(float.NegativeInfinity));
        var (dq, dk, dv) = (new float[c.Query.Length], new float[c.Key.Length], new float[c.Value.Length]);
        BlockSparseAttention.Backward(c.Query, c.Key, c.Value, output, lse, output, mask, shape, new BlockSparseOptions { Backend = "fused" }, dq, dk, dv);
        Assert.That(dq.Concat(dk).Concat(dv), Is.All.Zero);
    }

    internal static (float[] Output, float[] Lse) Forward(RandomMaskCase c)
    {
        var output = new float[c.Data.OutputLength];
        var lse = new float[c.Data.LseLength];
        using var mask = c.Mask();
        BlockSparseAttention.Forward(c.Data.Query, c.Data.Key, c.Data.Value, mask, c.Shape, c.Options(), output, lse);
        return (output, lse);
    }

    private static (float[] Dq, float[] Dk, float[] Dv) Backward(RandomMaskCase c, float[] output, float[] lse, float[] outputGrad)
    {
        var (dq, dk, dv) = (new float[c.Data.Query.Length], new float[c.Data.Key.Length], new float[c.Data.Value.Length]);
        using var mask = c.Mask();
        BlockSparseAttention.Backward(c.Data.Query, c.Data.Key, c.Data.Value, output, lse, outputGrad, mask, c.Shape, c.Options(), dq, dk, dv);
        return (dq, dk, dv);
    }

    private static void AssertEmptyRowsAreZero(RandomMaskCase c, float[] output)
    {
        var s = c.Shape;
        for (var b = 0; b < s.Batch; b++)
        {
            for (var q = 0; q < s.QueryTokens; q++)
            {
                for (var h = 0; h < s.Heads; h++)
                {
                    if (Enumerable.Range(0, s.KeyTokens).Any(k => c.Allows(b, h, q, k)))
                    {
                        continue;
                    }

                    var row = (((long)b * s.QueryTokens) + q) * s.Heads + h;
                    Assert.That(output.AsSpan((int)(row * s.ValueDim), s.ValueDim).ToArray(), Is.All.Zero, $"empty row {row}");
                }
            }
        }
    }

    internal static Half[] ToHalf(float[] data) => [.. data.Select(x => (Half)x)];

    internal static float[] FromHalf(Half[] data) => [.. data.Select(x => (float)x)];
}
