using Natten.Reference;
using Natten.Tests.Support;

namespace Natten.Tests.BlockSparse;

/// <summary>
/// bfloat16 storage on device tensors (<c>BlockSparseAttention.ForwardBFloat16</c> / <c>BackwardBFloat16</c> with
/// <see cref="DeviceTensor{T}"/> of <see cref="ushort"/>): against the Reference on random masks with the project's
/// bf16 tolerances, equal to the host-span bf16 entry points, and validated like the other device overloads.
/// </summary>
public sealed class BlockSparseDeviceBFloat16Tests
{
    private static AttentionDevice Device => AttentionDevice.Default;

    public static IEnumerable<TestCaseData> Seeds()
        => Enumerable.Range(4001, TestData.SweepCount(6, 80)).Select(s => new TestCaseData(s).SetName($"{{m}}(seed {s})"));

    [TestCaseSource(nameof(Seeds))]
    public void DeviceBFloat16FollowsTheToleranceRuleAndEqualsTheSpanPath(int seed)
    {
        var c = RandomMaskCase.Create(seed);
        var (q, k, v) = (Bits(c.Data.Query), Bits(c.Data.Key), Bits(c.Data.Value));
        var (qw, kw, vw) = (Widen(q), Widen(k), Widen(v));
        using var mask = c.Mask();
        using var dq = Device.Upload<ushort>(q, q.Length);
        using var dk = Device.Upload<ushort>(k, k.Length);
        using var dv = Device.Upload<ushort>(v, v.Length);
        using var o = Device.Allocate<ushort>((int)c.Data.OutputLength);
        using var l = Device.Allocate<float>((int)c.Data.LseLength);
        BlockSparseAttention.ForwardBFloat16(dq, dk, dv, mask, c.Shape, c.Options(), o, l);
        var (output, lse) = (o.ToArray(), l.ToArray());

        var dims = c.Data.Dims();
        var expected = ReferenceAttention.DenseMasked(dims, TestData.ToDouble(qw), TestData.ToDouble(kw), TestData.ToDouble(vw), c.Allows);
        var plain = PlainMaskedAttention.Forward(dims, qw, kw, vw, c.Allows);
        MaskedAssert.Rule(expected.Output, Widen(output), Widen(Bits(plain.Output)), Tolerance.BFloat16Floor, $"output, {c}");
        MaskedAssert.Rule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, $"lse, {c}");

        var hostOutput = new ushort[c.Data.OutputLength];
        var hostLse = new float[c.Data.LseLength];
        BlockSparseAttention.ForwardBFloat16(q, k, v, mask, c.Shape, c.Options(), hostOutput, hostLse);
        Assert.That(output, Is.EqualTo(hostOutput).AsCollection, "device output = span output");
        Assert.That(lse, Is.EqualTo(hostLse).AsCollection, "device LSE = span LSE");

        var outputGrad = Bits(TestData.Floats(new Random(seed + 7), c.Data.OutputLength));
        using var dO = Device.Upload<ushort>(outputGrad, outputGrad.Length);
        using var gq = Device.Allocate<ushort>(q.Length);
        using var gk = Device.Allocate<ushort>(k.Length);
        using var gv = Device.Allocate<ushort>(v.Length);
        BlockSparseAttention.BackwardBFloat16(dq, dk, dv, o, l, dO, mask, c.Shape, c.Options(), gq, gk, gv);
        var grads = ReferenceAttention.DenseMaskedBackward(
            dims, TestData.ToDouble(qw), TestData.ToDouble(kw), TestData.ToDouble(vw), TestData.ToDouble(Widen(outputGrad)), c.Allows);

        // FlashAttention's rule with the bf16 floor: the plain float32 backward, its gradients stored as bf16 like the
        // kernel's, is the baseline (gradients above 1 have bf16 ulps above 2^-7, so a fixed absolute bound does not fit).
        var plainGrads = PlainMaskedBackward(dims, qw, kw, vw, Widen(outputGrad), c.Allows);
        MaskedAssert.Within(grads.Query, plainGrads.Dq, Tolerance.Float32Gradient, "the float32 baseline's dQ (before bf16 storage)");
        MaskedAssert.Within(grads.Key, plainGrads.Dk, Tolerance.Float32Gradient, "the float32 baseline's dK");
        MaskedAssert.Within(grads.Value, plainGrads.Dv, Tolerance.Float32Gradient, "the float32 baseline's dV");
        Tolerance.AssertRule(grads.Query, Widen(gq.ToArray()), Widen(Bits(plainGrads.Dq)), Tolerance.BFloat16Floor, $"dQ, {c}");
        Tolerance.AssertRule(grads.Key, Widen(gk.ToArray()), Widen(Bits(plainGrads.Dk)), Tolerance.BFloat16Floor, $"dK, {c}");
        Tolerance.AssertRule(grads.Value, Widen(gv.ToArray()), Widen(Bits(plainGrads.Dv)), Tolerance.BFloat16Floor, $"dV, {c}");

        var (hq, hk, hv) = (new ushort[q.Length], new ushort[k.Length], new ushort[v.Length]);
        BlockSparseAttention.BackwardBFloat16(q, k, v, output, lse, outputGrad, mask, c.Shape, c.Options(), hq, hk, hv);
        Assert.That(gq.ToArray(), Is.EqualTo(hq).AsCollection, "device dQ = span dQ");
        Assert.That(gk.ToArray(), Is.EqualTo(hk).AsCollection, "device dK = span dK");
        Assert.That(gv.ToArray(), Is.EqualTo(hv).AsCollection, "device dV = span dV");
    }

    [Test]
    public void DeviceBFloat16RunsThroughADeviceBuiltMask()
    {
        const int tokens = 23;
        using var mask = BlockMasks.SlidingWindow(tokens, tokens, 4, 2, 5, 4, Device);
        var shape = new BlockSparseShape(2, tokens, tokens, 2, 8) { KvHeads = 1, ValueDim = 5 };
        var c = MaskedCase.Create(new Random(17), shape);
        bool Allows(int b, int h, int q, int k) => k >= q - 4 && k <= q + 2;
        var (q, k, v) = (Bits(c.Query), Bits(c.Key), Bits(c.Value));
        var (qw, kw, vw) = (Widen(q), Widen(k), Widen(v));
        using var dq = Device.Upload<ushort>(q, q.Length);
        using var dk = Device.Upload<ushort>(k, k.Length);
        using var dv = Device.Upload<ushort>(v, v.Length);
        using var o = Device.Allocate<ushort>((int)c.OutputLength);
        using var l = Device.Allocate<float>((int)c.LseLength);
        BlockSparseAttention.ForwardBFloat16(dq, dk, dv, mask, shape, new BlockSparseOptions(), o, l);
        var expected = ReferenceAttention.DenseMasked(c.Dims(), TestData.ToDouble(qw), TestData.ToDouble(kw), TestData.ToDouble(vw), Allows);
        var plain = PlainMaskedAttention.Forward(c.Dims(), qw, kw, vw, Allows);
        MaskedAssert.Rule(expected.Output, Widen(o.ToArray()), Widen(Bits(plain.Output)), Tolerance.BFloat16Floor, "output");
        MaskedAssert.Rule(expected.LogSumExp, l.ToArray(), plain.Lse, Tolerance.Float32Floor, "lse");
        Assert.That(mask.HasHostLists, Is.False, "the device-built lists were used in place");
    }

    [Test]
    public void InvalidDeviceBFloat16CallsThrowBeforeAnyWork()
    {
        var shape = new BlockSparseShape(1, 8, 8, 2, 4);
        using var mask = BlockMasks.Causal(8, 8, 4, 4);
        using var q = Device.Allocate<ushort>(8 * 2 * 4);
        using var k = Device.Allocate<ushort>(8 * 2 * 4);
        using var v = Device.Allocate<ushort>(8 * 2 * 4);
        using var shortValue = Device.Allocate<ushort>((8 * 2 * 4) - 1);
        using var o = Device.Allocate<ushort>(8 * 2 * 4);
        using var l = Device.Allocate<float>(8 * 2);
        var options = new BlockSparseOptions();

        var ex = Assert.Throws<ArgumentException>(() => BlockSparseAttention.ForwardBFloat16(q, k, shortValue, mask, shape, options, o, l));
        Assert.That(ex!.ParamName, Is.EqualTo("value"), ex.Message);
        ex = Assert.Throws<ArgumentException>(() => BlockSparseAttention.ForwardBFloat16(q, k, v, mask, shape, options, q, l));
        Assert.That(ex!.Message, Does.Contain("overlaps query"));
        ex = Assert.Throws<ArgumentException>(() => BlockSparseAttention.ForwardBFloat16(q, k, v, mask, shape with { QueryTokens = 9 }, options, o, l));
        Assert.That(ex!.ParamName, Is.EqualTo("mask"), ex.Message);
        ex = Assert.Throws<ArgumentException>(
            () => BlockSparseAttention.BackwardBFloat16(q, k, v, o, l, o, mask, shape, options, q, k, v));
        Assert.That(ex!.Message, Does.Contain("overlaps"));
        var notSupported = Assert.Throws<NotSupportedException>(
            () => BlockSparseAttention.ForwardBFloat16(q, k, v, mask, shape, new BlockSparseOptions { Backend = "reference" }, o, l));
        Assert.That(notSupported!.Message, Does.Contain("host memory only"));
    }

    /// <summary>
    /// The straightforward float32 backward of masked attention (no bias): per query row the softmax over its
    /// allowed keys, D = Σ P·dP, dS = P (dP − D), dQ = scale Σ dS k, dK += scale dS q, dV += P dO (GQA heads summed).
    /// </summary>
    private static (float[] Dq, float[] Dk, float[] Dv) PlainMaskedBackward(
        Natten.Reference.MaskedAttentionDims d, float[] q, float[] k, float[] v, float[] outputGrad, Func<int, int, int, int, bool> allows)
    {
        var (dq, dk, dv) = (new float[q.Length], new float[k.Length], new float[v.Length]);
        var scale = (float)d.Scale;
        var keys = new List<int>();
        var scores = new List<float>();
        for (var b = 0; b < d.Batch; b++)
        {
            for (var t = 0; t < d.QueryTokens; t++)
            {
                for (var h = 0; h < d.Heads; h++)
                {
                    var (hk, qo, oo) = (d.KvHeadOf(h), d.QueryOffset(b, t, h), d.OutputOffset(b, t, h));
                    (keys, scores) = ([], []);
                    for (var j = 0; j < d.KeyTokens; j++)
                    {
                        if (!allows(b, h, t, j))
                        {
                            continue;
                        }

                        var ko = d.KeyOffset(b, j, hk);
                        var s = 0f;
                        for (var c = 0; c < d.HeadDim; c++)
                        {
                            s += q[qo + c] * k[ko + c];
                        }

                        keys.Add(j);
                        scores.Add(scale * s);
                    }

                    if (keys.Count == 0)
                    {
                        continue;
                    }

                    var max = scores.Max();
                    var sum = scores.Sum(x => MathF.Exp(x - max));
                    var p = scores.Select(x => MathF.Exp(x - max) / sum).ToArray();
                    var dp = new float[keys.Count];
                    var rowTerm = 0f;
                    for (var i = 0; i < keys.Count; i++)
                    {
                        var vo = d.ValueOffset(b, keys[i], hk);
                        for (var c = 0; c < d.ValueDim; c++)
                        {
                            dp[i] += outputGrad[oo + c] * v[vo + c];
                        }

                        rowTerm += p[i] * dp[i];
                    }

                    for (var i = 0; i < keys.Count; i++)
                    {
                        var ds = p[i] * (dp[i] - rowTerm);
                        var (ko, vo) = (d.KeyOffset(b, keys[i], hk), d.ValueOffset(b, keys[i], hk));
                        for (var c = 0; c < d.HeadDim; c++)
                        {
                            dq[qo + c] += scale * ds * k[ko + c];
                            dk[ko + c] += scale * ds * q[qo + c];
                        }

                        for (var c = 0; c < d.ValueDim; c++)
                        {
                            dv[vo + c] += p[i] * outputGrad[oo + c];
                        }
                    }
                }
            }
        }

        return (dq, dk, dv);
    }

    private static ushort[] Bits(float[] x) => [.. x.Select(BFloat16Conversions.FromSingle)];

    private static float[] Widen(ushort[] x) => [.. x.Select(BFloat16Conversions.ToSingle)];
}
