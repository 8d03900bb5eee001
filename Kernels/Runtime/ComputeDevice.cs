using System.Collections.Concurrent;
using ILGPU.Runtime;

namespace Natten.Kernels.Runtime;

/// <summary>
/// One accelerator and the kernels loaded on it. Kernel sets are compiled once per device and
/// element type (thread-safe) and reused by every launch; launch paths only validate and launch.
/// </summary>
internal sealed class ComputeDevice : IDisposable
{
    private readonly ConcurrentDictionary<Type, Lazy<object>> _kernelSets = new();

    public ComputeDevice(Accelerator accelerator, AcceleratorKind kind)
    {
        Accelerator = accelerator;
        Kind = kind;
    }

    public Accelerator Accelerator { get; }

    public AcceleratorKind Kind { get; }

    public string Name => Accelerator.Name;

    /// <summary>The kernel set <typeparamref name="TSet"/> for this device, loading it on first use.</summary>
    public TSet Kernels<TSet>(Func<Accelerator, TSet> load)
        where TSet : class
        => (TSet)_kernelSets.GetOrAdd(typeof(TSet), _ => new Lazy<object>(() => load(Accelerator))).Value;

    /// <summary>
    /// Threads to launch for <paramref name="count"/> work items: kernels loop grid-stride over the rest,
    /// so item counts beyond 2^31 are fine. On the CPU accelerator, more threads than it runs at once only add overhead.
    /// </summary>
    public int LaunchExtent(long count)
    {
        var cap = Kind == AcceleratorKind.Cpu
            ? Accelerator.MaxNumThreadsPerGroup * Math.Max(1, Accelerator.NumMultiprocessors)
            : 1 << 22;
        return (int)Math.Max(1, Math.Min(count, cap));
    }

    public void Dispose() => Accelerator.Dispose();

    public override string ToString() => $"{Kind}: {Name}";
}
