using BenchmarkDotNet.Attributes;

namespace Natten.Benchmarks;

/// <summary>
/// The host-span API (<see cref="NeighborhoodAttention.Forward(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, AttentionShape, NeighborhoodAttentionOptions, Span{float}, Span{float})"/>
/// and <c>Backward</c>) per backend on small 1D and 2D problems. <c>fused</c> and <c>naive</c> run on the default
/// ILGPU accelerator (the CPU accelerator on a machine without a GPU) and includes the host↔device
/// copies; <c>reference</c> tests every (query, key) pair in double precision.
/// </summary>
[MemoryDiagnoser]
public class HostAttentionBenchmarks
{
    private const int Heads = 2;
    private const int HeadDim = 16;

    private readonly Problem _problem1D = new(new AttentionShape(1, 64, Heads, HeadDim));
    private readonly Problem _problem2D = new(new AttentionShape(1, (8, 8), Heads, HeadDim));
    private NeighborhoodAttentionOptions _options;

    [Params("fused", "naive", "reference")]
    public string Backend { get; set; } = "naive";

    /// <summary>Kernel size on every axis (at most 8 so the 2D problem stays valid).</summary>
    [Params(3, 7)]
    public int KernelSize { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _options = new NeighborhoodAttentionOptions(KernelSize) { Backend = Backend };

        // Compile the kernels and fill output/LSE for the backward before measuring.
        Forward1D();
        Forward2D();
    }

    [Benchmark(Description = "forward 1D n=64 H=2 D=16")]
    public void Forward1D() => _problem1D.Forward(_options);

    [Benchmark(Description = "forward 2D 8x8 H=2 D=16")]
    public void Forward2D() => _problem2D.Forward(_options);

    [Benchmark(Description = "backward 2D 8x8 H=2 D=16")]
    public void Backward2D() => _problem2D.Backward(_options);

    /// <summary>Inputs, outputs and gradients of one problem, allocated once.</summary>
    private sealed class Problem
    {
        private readonly AttentionShape _shape;
        private readonly float[] _q, _k, _v, _o, _lse, _dO, _dq, _dk, _dv;

        public Problem(AttentionShape shape)
        {
            _shape = shape;
            var rows = Enumerable.Range(0, shape.Rank).Aggregate(shape.Batch, (n, a) => n * shape.Spatial[a]) * shape.Heads;
            var random = new Random(1234);
            _q = Fill(random, rows * shape.HeadDim);
            _k = Fill(random, rows * shape.HeadDim);
            _v = Fill(random, rows * shape.HeadDim);
            _dO = Fill(random, rows * shape.HeadDim);
            _o = new float[rows * shape.HeadDim];
            _lse = new float[rows];
            _dq = new float[_q.Length];
            _dk = new float[_k.Length];
            _dv = new float[_v.Length];
        }

        public void Forward(NeighborhoodAttentionOptions options)
            => NeighborhoodAttention.Forward(_q, _k, _v, _shape, options, _o, _lse);

        public void Backward(NeighborhoodAttentionOptions options)
            => NeighborhoodAttention.Backward(_q, _k, _v, _o, _lse, _dO, _shape, options, _dq, _dk, _dv);

        private static float[] Fill(Random random, int length)
            => Enumerable.Range(0, length).Select(_ => (float)((random.NextDouble() * 2.0) - 1.0)).ToArray();
    }
}
