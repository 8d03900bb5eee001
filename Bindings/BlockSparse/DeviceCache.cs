using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Runtime;

namespace Natten.BlockSparse;

/// <summary>
/// One lazily created value per accelerator (device copies of an immutable host object): created on
/// first use on a device, reused by every later call there, freed by <see cref="Dispose"/> (a later
/// use uploads again).
/// </summary>
internal sealed class DeviceCache<TValue> : IDisposable
    where TValue : class, IDisposable
{
    private readonly ConcurrentDictionary<ComputeDevice, Lazy<TValue>> _entries = new();

    public TValue Get(ComputeDevice device, Func<ComputeDevice, TValue> create)
        => _entries.GetOrAdd(device, d => new Lazy<TValue>(() => create(d), LazyThreadSafetyMode.ExecutionAndPublication)).Value;

    public void Dispose()
    {
        foreach (var device in _entries.Keys)
        {
            if (_entries.TryRemove(device, out var entry) && entry.IsValueCreated)
            {
                entry.Value.Dispose();
            }
        }
    }
}

/// <summary>Device buffers owned together (an uploaded mask or bias), freed together.</summary>
internal sealed class DeviceBuffers : IDisposable
{
    private readonly List<MemoryBuffer> _buffers = [];

    /// <summary>Copies <paramref name="data"/> into a new buffer on <paramref name="device"/> (at least one element, so views are never null).</summary>
    public ArrayView<T> Upload<T>(ComputeDevice device, ReadOnlySpan<T> data)
        where T : unmanaged
    {
        var buffer = device.Accelerator.Allocate1D<T>(Math.Max(1, data.Length));
        _buffers.Add(buffer);
        ArrayView<T> view = buffer.View;
        if (!data.IsEmpty)
        {
            view.SubView(0, data.Length).CopyFromCPU(data);
        }

        return view.SubView(0, data.Length);
    }

    /// <summary>Takes ownership of a buffer allocated elsewhere (e.g. filled by a kernel) and returns its first <paramref name="length"/> elements.</summary>
    public ArrayView<T> Adopt<T>(MemoryBuffer1D<T, Stride1D.Dense> buffer, long length)
        where T : unmanaged
    {
        _buffers.Add(buffer);
        ArrayView<T> view = buffer.View;
        return view.SubView(0, length);
    }

    public void Dispose()
    {
        foreach (var buffer in _buffers)
        {
            buffer.Dispose();
        }

        _buffers.Clear();
    }
}
