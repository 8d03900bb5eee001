using Natten.Reference;
using Natten.Tests.Support;

namespace Natten.Tests.Api;

/// <summary>bfloat16 storage (bits in ushort): conversions, and every backend's bf16 forward against the Reference.</summary>
public sealed class BFloat16Tests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var backend in AttentionBackends.Names)
        {
            // D = 16 takes the fused backend's tensor-core path; D = 12 its float32 fallback.
            yield return new TestCaseData(backend, 16, 1).SetName($"{{m}}({backend}, D16)");
            yield return new TestCaseData(backend, 12, 2).SetName($"{{m}}({backend}, D12)");
        }
    }

    [TestCase(1.0f, (ushort)0x3F80)]
    [TestCase(-2.5f, (ushort)0xC020)]
    [TestCase(1.00390625f, (ushort)0x3F80)] // halfway: ties to even (down)
    [TestCase(1.01171875f, (ushort)0x3F82)] // halfway: ties to even (up)
    [TestCase(float.PositiveInfinity, (ushort)0x7F80)]
    public void RoundsToNearestEven(float value, ushort bits)
    {
        Assert.That(BFloat16Conversions.FromSingle(value), Is.EqualTo(bits));
        Assert.That(BFloat16Conversions.ToSingle(bits), Is.EqualTo(float.IsInfinity(value) ? value : BitConverter.Int32BitsToSingle(bits << 16)));
    }

    [Test]
    public void NaNStaysNaN() => Assert.That(float.IsNaN(BFloat16Conversions.ToSingle(BFloat16Conversions.FromSingle(float.NaN))), Is.True);

    [TestCaseSource(nameof(Cases))]
    public void ForwardFollowsTheToleranceRule(string backend, int headDim, int additional)
    {
        var reference = new NeighborhoodProblem
        {
            Batch = 1, Spatial = [7, 9], Heads = 2, KvHeads = 1, HeadDim = headDim, ValueDim = 16, KernelSize = [3, 5],
            Stride = [1, 2], Dilation = [2, 1], Causal = [false, true], AdditionalTokens = additional,
        };
        var shape = new AttentionShape(1, (7, 9), 2, headDim) { KvHeads = 1, ValueDim = 16, AdditionalTokens = additional };
        var options = new NeighborhoodAttentionOptions((3, 5)) { Stride = (1, 2), Dilation = (2, 1), Causal = (false, true), Backend = backend };
        var rng = new Random(headDim);
        ushort[] Bits(long n) => TestData.Floats(rng, n).Select(BFloat16Conversions.FromSingle).ToArray();
        float[] Values(ushort[] bits) => bits.Select(BFloat16Conversions.ToSingle).ToArray();
        var (q, k, v) = (Bits(63 * 2 * headDim), Bits(63 * headDim), Bits(63 * 16));
        var (ak, av) = (Bits(additional * headDim), Bits(additional * 16));
        var output = new ushort[63 * 2 * 16];
        var lse = new float[63 * 2];
        NeighborhoodAttention.ForwardBFloat16(q, k, v, ak, av, shape, options, output, lse);

        var expected = ReferenceAttention.Neighborhood(
            reference, TestData.ToDouble(Values(q)), TestData.ToDouble(Values(k)), TestData.ToDouble(Values(v)),
            TestData.ToDouble(Values(ak)), TestData.ToDouble(Values(av)));
        var plain = PlainAttention.Forward(reference, Values(q), Values(k), Values(v), Values(ak), Values(av));
        var plainRounded = plain.Output.Select(x => BFloat16Conversions.ToSingle(BFloat16Conversions.FromSingle(x))).ToArray();
        Tolerance.AssertRule(expected.Output, Values(output), plainRounded, Tolerance.BFloat16Floor, "output");
        Tolerance.AssertRule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, "lse");
    }

    [TestCaseSource(nameof(Cases))]
    public void BackwardMatchesReference(string backend, int headDim, int additional)
    {
        _ = additional; // the bf16 backward entry point takes no additional tokens
        var reference = new NeighborhoodProblem
        {
            Batch = 1, Spatial = [7, 9], Heads = 2, KvHeads = 1, HeadDim = headDim, ValueDim = 16, KernelSize = [3, 5],
            Stride = [1, 2], Dilation = [2, 1], Causal = [false, true],
        };
        var shape = new AttentionShape(1, (7, 9), 2, headDim) { KvHeads = 1, ValueDim = 16 };
        var options = new NeighborhoodAttentionOptions((3, 5)) { Stride = (1, 2), Dilation = (2, 1), Causal = (false, true), Backend = backend };
        var rng = new Random(headDim + 1);
        ushort[] Bits(long n) => TestData.Floats(rng, n).Select(BFloat16Conversions.FromSingle).ToArray();
        double[] Wide(ushort[] bits) => bits.Select(b => (double)BFloat16Conversions.ToSingle(b)).ToArray();
        var (q, k, v, dO) = (Bits(63 * 2 * headDim), Bits(63 * headDim), Bits(63 * 16), Bits(63 * 2 * 16));
        var output = new ushort[63 * 2 * 16];
        var lse = new float[63 * 2];
        NeighborhoodAttention.ForwardBFloat16(q, k, v, shape, options, output, lse);
        var (dq, dk, dv) = (new ushort[q.Length], new ushort[k.Length], new ushort[v.Length]);
        NeighborhoodAttention.BackwardBFloat16(q, k, v, output, lse, dO, shape, options, dq, dk, dv);

        var expected = ReferenceAttention.NeighborhoodBackward(reference, Wide(q), Wide(k), Wide(v), Wide(dO));
        float[] Values(ushort[] bits) => bits.Select(BFloat16Conversions.ToSingle).ToArray();
        Assert.That(TestData.MaxAbsDiff(expected.Query, Values(dq)), Is.LessThanOrEqualTo(Tolerance.BFloat16Gradient), "dQ");
        Assert.That(TestData.MaxAbsDiff(expected.Key, Values(dk)), Is.LessThanOrEqualTo(Tolerance.BFloat16Gradient), "dK");
        Assert.That(TestData.MaxAbsDiff(expected.Value, Values(dv)), Is.LessThanOrEqualTo(Tolerance.BFloat16Gradient), "dV");
    }

    [Test]
    public void ValidationRunsFirst()
    {
        var ex = Assert.Throws<ArgumentException>(() => NeighborhoodAttention.ForwardBFloat16(
            new ushort[10], new ushort[10], new ushort[10], new AttentionShape(1, 5, 1, 2), new NeighborhoodAttentionOptions(1), new ushort[10]));
        Assert.That(ex!.ParamName, Is.EqualTo("options"));
    }
}
