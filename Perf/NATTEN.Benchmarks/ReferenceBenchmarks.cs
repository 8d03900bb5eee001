using BenchmarkDotNet.Attributes;

namespace Natten.Benchmarks;

/// <summary>
/// <see cref="NeighborhoodAttention.Forward(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, AttentionShape, NeighborhoodAttentionOptions, Span{float}, Span{float})"/>
/// on the <c>reference</c> backend for a tiny 1D and 2D problem. The reference tests every (query, key)
/// pair in double precision, so these figures are a floor for the other backends, not a target.
/// </summary>
[MemoryDiagnoser]
public class ReferenceBenchmarks
{
    private const int Heads = 2;
    private const int HeadDim = 16;
    private const int Length1D = 64;
    private const int Side2D = 8;

    private float[] _query1D = [];
    private float[] _key1D = [];
    private float[] _value1D = [];
    private float[] _output1D = [];
    private float[] _lse1D = [];
    private float[] _query2D = [];
    private float[] _key2D = [];
    private float[] _value2D = [];
    private float[] _output2D = [];
    private float[] _lse2D = [];
    private AttentionShape _shape1D;
    private AttentionShape _shape2D;
    private NeighborhoodAttentionOptions _options;

    /// <summary>Kernel size on every axis (at most <see cref="Side2D"/> so the 2D problem stays valid).</summary>
    [Params(3, 7)]
    public int KernelSize { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(1234);
        _shape1D = new AttentionShape(Batch: 1, Spatial: Length1D, Heads: Heads, HeadDim: HeadDim);
        _shape2D = new AttentionShape(Batch: 1, Spatial: (Side2D, Side2D), Heads: Heads, HeadDim: HeadDim);
        _options = new NeighborhoodAttentionOptions(KernelSize) { Backend = "reference" };

        var tokens1D = Length1D * Heads * HeadDim;
        _query1D = Fill(random, tokens1D);
        _key1D = Fill(random, tokens1D);
        _value1D = Fill(random, tokens1D);
        _output1D = new float[tokens1D];
        _lse1D = new float[Length1D * Heads];

        var tokens2D = Side2D * Side2D * Heads * HeadDim;
        _query2D = Fill(random, tokens2D);
        _key2D = Fill(random, tokens2D);
        _value2D = Fill(random, tokens2D);
        _output2D = new float[tokens2D];
        _lse2D = new float[Side2D * Side2D * Heads];
    }

    [Benchmark(Description = "1D n=64 H=2 D=16")]
    public void Forward1D()
        => NeighborhoodAttention.Forward(_query1D, _key1D, _value1D, _shape1D, _options, _output1D, _lse1D);

    [Benchmark(Description = "2D 8x8 H=2 D=16")]
    public void Forward2D()
        => NeighborhoodAttention.Forward(_query2D, _key2D, _value2D, _shape2D, _options, _output2D, _lse2D);

    private static float[] Fill(Random random, int length)
    {
        var data = new float[length];
        for (var i = 0; i < data.Length; i++)
        {
            data[i] = (float)((random.NextDouble() * 2.0) - 1.0);
        }

        return data;
    }
}
