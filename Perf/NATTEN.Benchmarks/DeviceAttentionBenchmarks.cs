using BenchmarkDotNet.Attributes;

namespace Natten.Benchmarks;

/// <summary>
/// The device-tensor API on the default ILGPU accelerator (CUDA when present, else the CPU
/// accelerator): kernels only, no host copies. Problem S1 of docs/BENCHMARKS.md at the default
/// size; pass <c>--filter *Device*</c>.
/// </summary>
public class DeviceAttentionBenchmarks : IDisposable
{
    private AttentionDevice _device = null!;
    private DeviceTensor<float> _q = null!, _k = null!, _v = null!, _o = null!, _lse = null!;
    private AttentionShape _shape;
    private NeighborhoodAttentionOptions _options;

    [Params(16, 32)]
    public int Side { get; set; }

    [Params(7)]
    public int KernelSize { get; set; }

    [Params("fused", "naive")]
    public string Backend { get; set; } = "fused";

    [GlobalSetup]
    public void Setup()
    {
        _device = AttentionDevice.Default;
        _shape = new AttentionShape(1, (Side, Side), 4, 32);
        _options = new NeighborhoodAttentionOptions(KernelSize) { Backend = Backend };
        var length = Side * Side * 4 * 32;
        var random = new Random(7);
        float[] Fill() => Enumerable.Range(0, length).Select(_ => (float)((random.NextDouble() * 2.0) - 1.0)).ToArray();
        _q = _device.Upload<float>(Fill(), length);
        _k = _device.Upload<float>(Fill(), length);
        _v = _device.Upload<float>(Fill(), length);
        _o = _device.Allocate<float>(length);
        _lse = _device.Allocate<float>(Side * Side * 4);
        Forward();
    }

    [Benchmark(Description = "forward 2D, H4 D32 (device tensors)")]
    public void Forward() => NeighborhoodAttention.Forward(_q, _k, _v, _shape, _options, _o, _lse);

    [GlobalCleanup]
    public void Dispose()
    {
        foreach (var tensor in new[] { _q, _k, _v, _o, _lse })
        {
            tensor?.Dispose();
        }

        GC.SuppressFinalize(this);
    }
}
