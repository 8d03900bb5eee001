using Natten.Kernels.Common;
using Natten.Kernels.Cpu;
using Natten.Reference;
using Natten.Tests.Support;

namespace Natten.Tests.Cpu;

/// <summary>
/// One problem for the CPU kernels, run directly through <see cref="CpuAttention"/> (so tests can pick
/// the vector width, the tiles and the thread count) and checked against the double Reference.
/// </summary>
public sealed record CpuCase(string Name, int[] Spatial, int[] Kernel)
{
    public int[] Stride { get; init; } = [.. Spatial.Select(_ => 1)];

    public int[] Dilation { get; init; } = [.. Spatial.Select(_ => 1)];

    public bool[] Causal { get; init; } = new bool[Spatial.Length];

    public int Batch { get; init; } = 1;

    public int Heads { get; init; } = 2;

    public int KvHeads { get; init; } = 1;

    public int HeadDim { get; init; } = 8;

    public int ValueDim { get; init; } = 8;

    public int Additional { get; init; }

    public double? Scale { get; init; }

    public long Tokens => Spatial.Aggregate(1L, (n, x) => n * x);

    public long Rows => Batch * Tokens * Heads;

    internal ProblemParams Params => new(
        Batch, Heads, KvHeads, HeadDim, ValueDim, Additional, Spatial, Kernel, Stride, Dilation, Causal, Scale ?? (1 / Math.Sqrt(HeadDim)));

    internal NeighborhoodProblem Reference => new()
    {
        Batch = Batch,
        Spatial = Spatial,
        Heads = Heads,
        KvHeads = KvHeads,
        HeadDim = HeadDim,
        ValueDim = ValueDim,
        KernelSize = Kernel,
        Stride = Stride,
        Dilation = Dilation,
        Causal = Causal,
        Scale = Scale,
        AdditionalTokens = Additional,
    };

    public override string ToString()
        => $"{Name}: B={Batch} {string.Join('x', Spatial)} H={Heads}/{KvHeads} D={HeadDim} Dv={ValueDim} K={string.Join('x', Kernel)} "
         + $"s={string.Join('x', Stride)} d={string.Join('x', Dilation)} causal={string.Join('x', Causal.Select(c => c ? 1 : 0))} +{Additional}";

    /// <summary>Seeded inputs in [-1, 1): Q, K, V, additional K and V, and an upstream gradient.</summary>
    internal CpuInputs Inputs(int seed)
    {
        var rng = new Random(seed);
        var kvRows = Batch * Tokens * KvHeads;
        var extra = (long)Batch * Additional * KvHeads;
        return new CpuInputs(
            TestData.Floats(rng, Rows * HeadDim), TestData.Floats(rng, kvRows * HeadDim), TestData.Floats(rng, kvRows * ValueDim),
            TestData.Floats(rng, extra * HeadDim), TestData.Floats(rng, extra * ValueDim), TestData.Floats(rng, Rows * ValueDim));
    }

    internal (float[] Output, float[] Lse) Forward(CpuInputs x, CpuOptions? options = null)
    {
        var output = new float[Rows * ValueDim];
        var lse = new float[Rows];
        CpuAttention.Forward(Params, x.Query, x.Key, x.Value, x.AdditionalKey, x.AdditionalValue, output, lse, options);
        return (output, lse);
    }

    internal CpuGradients Backward(CpuInputs x, float[] output, float[] lse, CpuOptions? options = null)
    {
        var g = new CpuGradients(
            new float[x.Query.Length], new float[x.Key.Length], new float[x.Value.Length],
            new float[x.AdditionalKey.Length], new float[x.AdditionalValue.Length]);
        CpuAttention.Backward(
            Params, x.Query, x.Key, x.Value, x.AdditionalKey, x.AdditionalValue, output, lse, x.OutputGrad,
            g.Query, g.Key, g.Value, g.AdditionalKey, g.AdditionalValue, options);
        return g;
    }

    internal AttentionResult ReferenceForward(CpuInputs x)
        => ReferenceAttention.Neighborhood(
            Reference, TestData.ToDouble(x.Query), TestData.ToDouble(x.Key), TestData.ToDouble(x.Value),
            Additional > 0 ? TestData.ToDouble(x.AdditionalKey) : null, Additional > 0 ? TestData.ToDouble(x.AdditionalValue) : null);

    internal AttentionGradients ReferenceBackward(CpuInputs x)
        => ReferenceAttention.NeighborhoodBackward(
            Reference, TestData.ToDouble(x.Query), TestData.ToDouble(x.Key), TestData.ToDouble(x.Value), TestData.ToDouble(x.OutputGrad),
            Additional > 0 ? TestData.ToDouble(x.AdditionalKey) : null, Additional > 0 ? TestData.ToDouble(x.AdditionalValue) : null);

    /// <summary>Forward against the Reference with FlashAttention's rule (the plain float32 loop as baseline).</summary>
    internal void AssertForward(int seed, CpuOptions? options = null)
    {
        var x = Inputs(seed);
        var (output, lse) = Forward(x, options);
        var expected = ReferenceForward(x);
        var plain = PlainAttention.Forward(
            Reference, x.Query, x.Key, x.Value, Additional > 0 ? x.AdditionalKey : null, Additional > 0 ? x.AdditionalValue : null);
        Tolerance.AssertRule(expected.Output, output, plain.Output, Tolerance.Float32Floor, $"output, {this}");
        Tolerance.AssertRule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, $"lse, {this}");
    }

    /// <summary>Backward (from this kernel's own forward) against the Reference's analytic gradients.</summary>
    internal void AssertBackward(int seed, CpuOptions? options = null)
    {
        var x = Inputs(seed);
        var (output, lse) = Forward(x, options);
        var g = Backward(x, output, lse, options);
        var expected = ReferenceBackward(x);
        AssertGradient(expected.Query, g.Query, "dQ");
        AssertGradient(expected.Key, g.Key, "dK");
        AssertGradient(expected.Value, g.Value, "dV");
        AssertGradient(expected.AdditionalKey, g.AdditionalKey, "d(additional K)");
        AssertGradient(expected.AdditionalValue, g.AdditionalValue, "d(additional V)");
    }

    /// <summary>Gradients sum many terms: the absolute bound scales with the largest expected magnitude.</summary>
    internal void AssertGradient(double[] expected, float[] actual, string what, double tolerance = Tolerance.Float32Gradient)
    {
        var scale = Math.Max(1, expected.Length == 0 ? 0 : expected.Max(Math.Abs));
        Assert.That(TestData.MaxAbsDiff(expected, actual), Is.LessThanOrEqualTo(tolerance * scale), $"{what}, {this}");
    }
}

/// <summary>Inputs of one case.</summary>
internal sealed record CpuInputs(float[] Query, float[] Key, float[] Value, float[] AdditionalKey, float[] AdditionalValue, float[] OutputGrad);

/// <summary>Gradients of one case.</summary>
internal sealed record CpuGradients(float[] Query, float[] Key, float[] Value, float[] AdditionalKey, float[] AdditionalValue);
