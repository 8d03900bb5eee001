using BenchmarkDotNet.Attributes;

namespace Natten.Benchmarks;

/// <summary>
/// The <c>cpu</c> backend on the CPU problems of docs/BENCHMARKS.md (float32, B = 1, host spans):
/// S1 2D 32×32 K7×7 H4 D32, S2 2D 56×56 K7×7 H4 D32, S3 1D 4096 K127 H4 D64, forward and backward.
/// Useful GFLOP/s = forward FLOPs (<see cref="AttentionFlops"/>) / time (backward: 2.5× the forward's FLOPs).
/// Run with <c>--filter *CpuBenchmarks* --job short</c>; min and median are shown because shared
/// machines make the mean noisy.
/// </summary>
[MinColumn]
[MedianColumn]
public class CpuBenchmarks
{
    private CpuProblem _problem = null!;

    [Params("S1", "S2", "S3")]
    public string Problem { get; set; } = "S1";

    [GlobalSetup]
    public void Setup()
    {
        _problem = CpuProblem.Create(Problem, "cpu");
        _problem.Forward();
    }

    [Benchmark(Description = "cpu forward")]
    public void Forward() => _problem.Forward();

    [Benchmark(Description = "cpu backward")]
    public void Backward() => _problem.Backward();
}

/// <summary>
/// Problem S1 forward on <c>cpu</c> against <c>naive</c> (ILGPU's CPU accelerator on a machine without a
/// GPU, the previous automatic choice): the ratio column is the speedup. Run with
/// <c>--filter *CpuVersusNaive* --job short</c>.
/// </summary>
[MinColumn]
[MedianColumn]
public class CpuVersusNaiveBenchmarks
{
    private CpuProblem _cpu = null!;
    private CpuProblem _naive = null!;

    [GlobalSetup]
    public void Setup()
    {
        _cpu = CpuProblem.Create("S1", "cpu");
        _naive = CpuProblem.Create("S1", "naive");
        _cpu.Forward();
        _naive.Forward();
    }

    [Benchmark(Baseline = true, Description = "naive forward S1")]
    public void Naive() => _naive.Forward();

    [Benchmark(Description = "cpu forward S1")]
    public void Cpu() => _cpu.Forward();
}

/// <summary>Inputs and outputs of one benchmark problem, allocated once.</summary>
internal sealed class CpuProblem
{
    private readonly AttentionShape _shape;
    private readonly NeighborhoodAttentionOptions _options;
    private readonly float[] _q, _k, _v, _o, _lse, _dO, _dq, _dk, _dv;

    private CpuProblem(AttentionShape shape, NeighborhoodAttentionOptions options)
    {
        _shape = shape;
        _options = options;
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

    /// <summary>Problem S1, S2 or S3 of docs/BENCHMARKS.md on <paramref name="backend"/>.</summary>
    public static CpuProblem Create(string id, string backend) => id switch
    {
        "S1" => new(new AttentionShape(1, (32, 32), 4, 32), new NeighborhoodAttentionOptions(7) { Backend = backend }),
        "S2" => new(new AttentionShape(1, (56, 56), 4, 32), new NeighborhoodAttentionOptions(7) { Backend = backend }),
        "S3" => new(new AttentionShape(1, 4096, 4, 64), new NeighborhoodAttentionOptions(127) { Backend = backend }),
        _ => throw new ArgumentOutOfRangeException(nameof(id), id, "S1, S2 or S3"),
    };

    public void Forward() => NeighborhoodAttention.Forward(_q, _k, _v, _shape, _options, _o, _lse);

    public void Backward() => NeighborhoodAttention.Backward(_q, _k, _v, _o, _lse, _dO, _shape, _options, _dq, _dk, _dv);

    private static float[] Fill(Random random, int length)
        => Enumerable.Range(0, length).Select(_ => (float)((random.NextDouble() * 2.0) - 1.0)).ToArray();
}
