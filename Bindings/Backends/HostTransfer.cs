using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Runtime;

namespace Natten.Backends;

/// <summary>Host-span ↔ device-buffer copies for the ILGPU backends' host entry points.</summary>
internal static class HostTransfer
{
    /// <summary>A device copy of <paramref name="source"/> reinterpreted as <typeparamref name="TD"/> (an empty span gives an empty buffer).</summary>
    public static MemoryBuffer1D<TD, Stride1D.Dense> Upload<TD, T>(ComputeDevice device, ReadOnlySpan<T> source)
        where TD : unmanaged
        where T : unmanaged
    {
        var buffer = device.Accelerator.Allocate1D<TD>(source.Length);
        if (!source.IsEmpty)
        {
            ArrayView<TD> view = buffer.View;
            view.CopyFromCPU(MemoryMarshal.Cast<T, TD>(source));
        }

        return buffer;
    }

    /// <summary>Copies a whole buffer into the start of <paramref name="destination"/> (which validation made long enough).</summary>
    public static void Download<TD>(MemoryBuffer1D<TD, Stride1D.Dense> buffer, Span<TD> destination)
        where TD : unmanaged
    {
        if (buffer.Length > 0)
        {
            ArrayView<TD> view = buffer.View;
            view.CopyToCPU(destination[..(int)buffer.Length]);
        }
    }
}
