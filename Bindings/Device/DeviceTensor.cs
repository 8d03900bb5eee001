using ILGPU;
using ILGPU.Runtime;

namespace Natten;

/// <summary>
/// A dense, row-major tensor in an accelerator's memory, with the shape it was created with.
/// Dispose it (or use <c>using</c>) to free the device memory; every member of a disposed tensor throws.
/// </summary>
/// <typeparam name="T">Element type: <see cref="float"/> or <see cref="System.Half"/> for attention (bfloat16 bits as <see cref="ushort"/> for the block-sparse <c>ForwardBFloat16</c> / <c>BackwardBFloat16</c> overloads); any unmanaged type for storage.</typeparam>
public sealed class DeviceTensor<T> : IDisposable, IDeviceTensor
    where T : unmanaged
{
    private readonly int[] _shape;
    private MemoryBuffer1D<T, Stride1D.Dense>? _buffer;

    internal DeviceTensor(AttentionDevice device, int[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (shape.Length == 0)
        {
            throw new ArgumentException("A tensor needs at least one extent.", nameof(shape));
        }

        long length = 1;
        for (var i = 0; i < shape.Length; i++)
        {
            if (shape[i] < 0)
            {
                throw new ArgumentException($"Extent {i} of the shape is {shape[i]}; extents must be 0 or more.", nameof(shape));
            }

            length = checked(length * shape[i]);
        }

        Device = device;
        _shape = (int[])shape.Clone();
        Length = length;
        _buffer = device.Accelerator.Allocate1D<T>(length);
    }

    /// <summary>The device holding the data.</summary>
    public AttentionDevice Device { get; }

    /// <summary>The extents, outermost first.</summary>
    public IReadOnlyList<int> Shape => _shape;

    /// <summary>Number of elements (the product of <see cref="Shape"/>).</summary>
    public long Length { get; }

    /// <summary>Whether <see cref="Dispose"/> has been called.</summary>
    public bool IsDisposed => _buffer is null;

    /// <summary>The data as an ILGPU view, for interop with other ILGPU kernels.</summary>
    /// <exception cref="ObjectDisposedException">The tensor was disposed.</exception>
    public ArrayView<T> View => Buffer.View;

    internal MemoryBuffer1D<T, Stride1D.Dense> Buffer => _buffer ?? throw new ObjectDisposedException(nameof(DeviceTensor<T>));

    /// <summary>Copies <paramref name="source"/> (exactly <see cref="Length"/> elements) into this tensor.</summary>
    /// <exception cref="ArgumentException">The source length differs from <see cref="Length"/>.</exception>
    /// <exception cref="ObjectDisposedException">The tensor was disposed.</exception>
    public void CopyFrom(ReadOnlySpan<T> source)
    {
        if (source.Length != Length)
        {
            throw new ArgumentException($"source has {source.Length} elements; the tensor [{string.Join(", ", _shape)}] holds {Length}.", nameof(source));
        }

        if (Length > 0)
        {
            View.CopyFromCPU(source);
        }
    }

    /// <summary>Copies this tensor into the first <see cref="Length"/> elements of <paramref name="destination"/>.</summary>
    /// <exception cref="ArgumentException">The destination is shorter than <see cref="Length"/>.</exception>
    /// <exception cref="ObjectDisposedException">The tensor was disposed.</exception>
    public void CopyTo(Span<T> destination)
    {
        if (destination.Length < Length)
        {
            throw new ArgumentException($"destination has {destination.Length} elements; the tensor holds {Length}.", nameof(destination));
        }

        if (Length > 0)
        {
            View.CopyToCPU(destination[..(int)Length]);
        }
    }

    /// <summary>The tensor's data in a new array.</summary>
    /// <exception cref="ObjectDisposedException">The tensor was disposed.</exception>
    public T[] ToArray()
    {
        var result = new T[Length];
        CopyTo(result);
        return result;
    }

    /// <summary>Sets every element to zero.</summary>
    /// <exception cref="ObjectDisposedException">The tensor was disposed.</exception>
    public void Clear() => Buffer.MemSetToZero();

    /// <summary>Frees the device memory.</summary>
    public void Dispose()
    {
        _buffer?.Dispose();
        _buffer = null;
    }

    /// <summary><c>DeviceTensor&lt;Single&gt;[1, 8, 8, 2, 16] on Cpu</c>.</summary>
    public override string ToString() => $"DeviceTensor<{typeof(T).Name}>[{string.Join(", ", _shape)}] on {Device.Kind}";
}
