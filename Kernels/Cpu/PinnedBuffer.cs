using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Natten.Kernels.Cpu;

/// <summary>
/// A per-call float buffer on the pinned object heap (transposed tensors, converted Half inputs,
/// gradient workspaces), addressed by pointer from worker threads. Rented from a small pool and
/// returned on dispose, so repeated calls of one size allocate nothing.
/// </summary>
internal sealed unsafe class PinnedBuffer : IDisposable
{
    private const int PoolLimit = 16;

    /// <summary>Larger arrays (above 64 MiB) are left to the GC rather than kept for the process's life.</summary>
    private const int PooledLengthLimit = 16 << 20;
    private static readonly ConcurrentBag<float[]> Pool = [];

    private float[]? _array;

    private PinnedBuffer(float[] array, long length)
    {
        _array = array;
        Length = length;
        Pointer = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(array));
    }

    public float* Pointer { get; }

    public long Length { get; }

    public Span<float> Span => new(Pointer, checked((int)Length));

    /// <summary>A buffer of <paramref name="length"/> floats (contents unspecified).</summary>
    public static PinnedBuffer Rent(long length)
    {
        var needed = (int)Math.Max(length, 16);
        var skipped = new List<float[]>();
        float[]? found = null;
        for (var tries = 0; tries < PoolLimit && Pool.TryTake(out var candidate); tries++)
        {
            if (candidate.Length >= needed && candidate.Length <= 2L * needed + 4096)
            {
                found = candidate;
                break;
            }

            skipped.Add(candidate);
        }

        foreach (var array in skipped)
        {
            Pool.Add(array);
        }

        return new PinnedBuffer(found ?? GC.AllocateUninitializedArray<float>(needed, pinned: true), length);
    }

    public void Dispose()
    {
        var array = Interlocked.Exchange(ref _array, null);
        if (array is not null && array.Length <= PooledLengthLimit && Pool.Count < PoolLimit)
        {
            Pool.Add(array);
        }
    }
}
