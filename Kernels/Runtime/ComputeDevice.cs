using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;

namespace Natten.Kernels.Runtime;

/// <summary>
/// One accelerator and the kernels loaded on it. Kernel sets are compiled once per device and
/// element type (thread-safe) and reused by every launch; launch paths only validate and launch.
/// </summary>
internal sealed class ComputeDevice : IDisposable
{
    private readonly ConcurrentDictionary<Type, Lazy<object>> _kernelSets = new();
    private readonly Lazy<SharedMemoryOptIn?> _sharedMemory;

    public ComputeDevice(Accelerator accelerator, AcceleratorKind kind)
        : this(accelerator, kind, () => CudaSharedMemory.TryCreateOptIn(accelerator))
    {
    }

    /// <summary>A device whose shared-memory opt-in comes from <paramref name="sharedMemory"/> (null: none); tests use it.</summary>
    internal ComputeDevice(Accelerator accelerator, AcceleratorKind kind, Func<SharedMemoryOptIn?> sharedMemory)
    {
        Accelerator = accelerator;
        Kind = kind;
        _sharedMemory = new(sharedMemory, LazyThreadSafetyMode.ExecutionAndPublication);
    }

    public Accelerator Accelerator { get; }

    public AcceleratorKind Kind { get; }

    public string Name => Accelerator.Name;

    /// <summary>The shared-memory opt-in (CUDA), or null where the accelerator's own limit is all there is.</summary>
    internal SharedMemoryOptIn? SharedMemory => _sharedMemory.Value;

    /// <summary>
    /// Shared memory one group may use, static and dynamic together, in bytes: on CUDA the driver's opt-in limit
    /// (CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, e.g. 227 KB on sm_90; launches beyond 48 KB go through
    /// <see cref="PrepareSharedMemory"/>), elsewhere <see cref="Accelerator.MaxSharedMemoryPerGroup"/>.
    /// </summary>
    public int MaxSharedBytesPerGroup => SharedMemory?.OptInLimit ?? Accelerator.MaxSharedMemoryPerGroup;

    /// <summary>Dynamic shared bytes a launch may request of a kernel that declares <paramref name="staticBytes"/> of static shared memory.</summary>
    public long MaxDynamicSharedBytes(int staticBytes) => (long)MaxSharedBytesPerGroup - staticBytes;

    /// <summary>
    /// Why a group of <paramref name="what"/> (e.g. "tile shape … with D=64") cannot have <paramref name="dynamicBytes"/> of dynamic
    /// shared memory on top of <paramref name="staticBytes"/> static on this device, or null: the one shared-memory rule of every
    /// launcher's check and of the tile search.
    /// </summary>
    public string? CheckSharedMemory(string what, long dynamicBytes, int staticBytes = 0)
    {
        if (dynamicBytes <= MaxDynamicSharedBytes(staticBytes))
        {
            return null;
        }

        var parts = staticBytes > 0 ? $" ({staticBytes} static + {dynamicBytes} dynamic)" : string.Empty;
        var optIn = SharedMemory is { } o && o.OptInLimit > o.DefaultLimit ? $" with the opt-in ({o.DefaultLimit} without)" : string.Empty;
        return $"{what} needs {staticBytes + dynamicBytes} bytes of shared memory{parts}; {Name} allows {MaxSharedBytesPerGroup}{optIn}";
    }

    /// <summary>
    /// Call before launching <paramref name="launcher"/> with <paramref name="config"/>: on CUDA, when the kernel's static shared
    /// memory plus the config's dynamic bytes exceed the 48 KB default, raises the kernel's dynamic limit
    /// (<c>cuFuncSetAttribute</c>, once per kernel, thread-safe); elsewhere nothing.
    /// </summary>
    /// <exception cref="InvalidOperationException">The launch needs more than <see cref="MaxSharedBytesPerGroup"/>.</exception>
    public void PrepareSharedMemory<TDelegate>(TDelegate launcher, in KernelConfig config)
        where TDelegate : Delegate
    {
        var bytes = config.SharedMemoryConfig.ArraySize;
        if (bytes <= 0 || SharedMemory is not { } optIn)
        {
            return;
        }

        if (!launcher.TryGetKernel(out var kernel))
        {
            // Without the kernel object there is no function to raise; a launch the default limit cannot hold would fail in
            // the driver with an unhelpful error, so say why here.
            if (bytes > optIn.DefaultLimit)
            {
                throw new InvalidOperationException(
                    $"{Name}: a launch with {bytes} bytes of dynamic shared memory needs the opt-in beyond {optIn.DefaultLimit}, but its kernel could not be resolved from the launcher.");
            }

            return;
        }

        optIn.Prepare(kernel, bytes);
    }

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
