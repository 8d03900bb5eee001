using Natten.Kernels.Cpu;
using Natten.Reference;
using Natten.Tests.Support;

namespace Natten.Tests.Cpu;

/// <summary>
/// The <c>cpu</c> backend through the public API: Half storage (forward and backward) against the
/// Reference on the Half-rounded inputs, and problems larger than the random sweep's against the
/// Reference with FlashAttention's tolerance rule.
/// </summary>
public sealed class CpuStorageAndScaleTests
{
    private static NeighborhoodAttentionOptions Options(int[] kernel) => new(AxisValues.PerAxis(kernel)) { Backend = "cpu" };

    [TestCase(1)]
    [TestCase(2)]
    public void HalfForwardMatchesReferenceOnRoundedInputs(int seed)
    {
        var p = new CpuCase("half", [13, 11], [5, 3]) { Heads = 4, KvHeads = 2, HeadDim = 24, ValueDim = 40, Additional = 2, Stride = [2, 1] };
        var x = p.Inputs(seed);
        var (q, k, v, ak, av) = (ToHalf(x.Query), ToHalf(x.Key), ToHalf(x.Value), ToHalf(x.AdditionalKey), ToHalf(x.AdditionalValue));
        var shape = Shape(p);
        var output = new Half[p.Rows * p.ValueDim];
        var lse = new float[p.Rows];
        NeighborhoodAttention.Forward(q, k, v, ak, av, shape, Options(p.Kernel) with { Stride = AxisValues.PerAxis(p.Stride) }, output, lse);

        var expected = ReferenceAttention.Neighborhood(
            p.Reference, TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v), TestData.ToDouble(ak), TestData.ToDouble(av));
        var plain = PlainAttention.Forward(p.Reference, ToFloat(q), ToFloat(k), ToFloat(v), ToFloat(ak), ToFloat(av));
        var plainHalf = plain.Output.Select(o => (float)(Half)o).ToArray();
        Tolerance.AssertRule(expected.Output, ToFloat(output), plainHalf, Tolerance.Float16Floor, "output");
        Tolerance.AssertRule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, "lse");
    }

    [Test]
    public void HalfBackwardMatchesReferenceOnRoundedInputs()
    {
        var p = new CpuCase("half backward", [9, 10], [3, 4]) { Heads = 2, KvHeads = 1, HeadDim = 16, ValueDim = 8, Causal = [false, true] };
        var x = p.Inputs(seed: 5);
        var (q, k, v, dO) = (ToHalf(x.Query), ToHalf(x.Key), ToHalf(x.Value), ToHalf(x.OutputGrad));
        var shape = Shape(p);
        var options = Options(p.Kernel) with { Causal = new AxisFlags(false, true) };
        var output = new Half[p.Rows * p.ValueDim];
        var lse = new float[p.Rows];
        NeighborhoodAttention.Forward(q, k, v, shape, options, output, lse);
        var (dq, dk, dv) = (new Half[q.Length], new Half[k.Length], new Half[v.Length]);
        NeighborhoodAttention.Backward(q, k, v, output, lse, dO, shape, options, dq, dk, dv);

        var expected = ReferenceAttention.NeighborhoodBackward(
            p.Reference, TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v), TestData.ToDouble(dO));
        p.AssertGradient(expected.Query, ToFloat(dq), "dQ", Tolerance.Float16Gradient);
        p.AssertGradient(expected.Key, ToFloat(dk), "dK", Tolerance.Float16Gradient);
        p.AssertGradient(expected.Value, ToFloat(dv), "dV", Tolerance.Float16Gradient);
    }

    [Test]
    public void HalfBackwardWithAdditionalTokensMatchesReference()
    {
        var p = new CpuCase("half backward + extra", [11], [4]) { Heads = 4, KvHeads = 2, HeadDim = 8, ValueDim = 12, Additional = 3, Stride = [2] };
        var x = p.Inputs(seed: 15);
        var (q, k, v, ak, av, dO) = (ToHalf(x.Query), ToHalf(x.Key), ToHalf(x.Value), ToHalf(x.AdditionalKey), ToHalf(x.AdditionalValue), ToHalf(x.OutputGrad));
        var output = new Half[p.Rows * p.ValueDim];
        var lse = new float[p.Rows];
        CpuAttention.Forward(p.Params, q, k, v, ak, av, output, lse);
        var (dq, dk, dv, dak, dav) = (new Half[q.Length], new Half[k.Length], new Half[v.Length], new Half[ak.Length], new Half[av.Length]);
        CpuAttention.Backward(p.Params, q, k, v, ak, av, output, lse, dO, dq, dk, dv, dak, dav);

        var expected = ReferenceAttention.NeighborhoodBackward(
            p.Reference, TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v), TestData.ToDouble(dO),
            TestData.ToDouble(ak), TestData.ToDouble(av));
        p.AssertGradient(expected.Query, ToFloat(dq), "dQ", Tolerance.Float16Gradient);
        p.AssertGradient(expected.Key, ToFloat(dk), "dK", Tolerance.Float16Gradient);
        p.AssertGradient(expected.Value, ToFloat(dv), "dV", Tolerance.Float16Gradient);
        p.AssertGradient(expected.AdditionalKey, ToFloat(dak), "d(additional K)", Tolerance.Float16Gradient);
        p.AssertGradient(expected.AdditionalValue, ToFloat(dav), "d(additional V)", Tolerance.Float16Gradient);
    }

    [Test]
    public void ForwardWithoutLseWritesOnlyTheOutput()
    {
        var p = new CpuCase("no lse", [40], [9]) { Heads = 2, KvHeads = 2, HeadDim = 16, ValueDim = 16 };
        var x = p.Inputs(seed: 6);
        var output = new float[p.Rows * p.ValueDim];
        NeighborhoodAttention.Forward(x.Query, x.Key, x.Value, Shape(p), Options(p.Kernel), output);
        Assert.That(TestData.MaxAbsDiff(p.ReferenceForward(x).Output, output), Is.LessThanOrEqualTo(Tolerance.Float32));
    }

    [Test]
    public void OneDimensional300TokensK31D64MatchesReference()
    {
        var p = new CpuCase("1D 300 K31 D64", [300], [31]) { Heads = 1, KvHeads = 1, HeadDim = 64, ValueDim = 64 };
        p.AssertForward(seed: 7);
        p.AssertBackward(seed: 8);
    }

    [Test]
    public void TwoDimensional40x40K7x7D32MatchesReference()
    {
        var p = new CpuCase("2D 40x40 K7 D32", [40, 40], [7, 7]) { Heads = 1, KvHeads = 1, HeadDim = 32, ValueDim = 32 };
        p.AssertForward(seed: 9);
        p.AssertBackward(seed: 10);
    }

    [Test]
    public void ThreeDimensional10x12x14MatchesReference()
    {
        var p = new CpuCase("3D 10x12x14 K3x5x7", [10, 12, 14], [3, 5, 7]) { Heads = 2, KvHeads = 1, HeadDim = 16, ValueDim = 16, Causal = [true, false, false] };
        p.AssertForward(seed: 11);
        p.AssertBackward(seed: 12);
    }

    private static AttentionShape Shape(CpuCase p) => new(p.Batch, AxisValues.PerAxis(p.Spatial), p.Heads, p.HeadDim)
    {
        KvHeads = p.KvHeads,
        ValueDim = p.ValueDim,
        AdditionalTokens = p.Additional,
    };

    private static Half[] ToHalf(float[] data) => [.. data.Select(x => (Half)x)];

    private static float[] ToFloat(Half[] data) => [.. data.Select(x => (float)x)];
}
