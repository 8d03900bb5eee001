using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Natten.Kernels.Cpu;

/// <summary>
/// One worker's scratch memory: a few 64-byte aligned float buffers on the pinned object heap, so
/// kernels address them by pointer. Workspaces are pooled (one per concurrently running worker) and
/// grow on demand; a call rents one per worker and returns it when the worker finishes.
/// </summary>
internal sealed unsafe class CpuWorkspace
{
    /// <summary>Number of separate buffers a pass may use.</summary>
    public const int Slots = 16;

    private static readonly ConcurrentBag<CpuWorkspace> Pool = [];

    private readonly float[]?[] _arrays = new float[Slots][];
    private readonly float*[] _pointers = new float*[Slots];

    /// <summary>Column ranges of a block's runs: per range set, lo and hi for each of the block's rows.</summary>
    public int[] Ranges { get; } = new int[4 * CpuBlock.Rows];

    /// <summary>The runs of one block (grown on demand).</summary>
    public CpuRun[] Runs { get; private set; } = new CpuRun[64];

    public static CpuWorkspace Rent() => Pool.TryTake(out var workspace) ? workspace : new CpuWorkspace();

    public static void Return(CpuWorkspace workspace) => Pool.Add(workspace);

    /// <summary>Buffer <paramref name="slot"/> with room for at least <paramref name="count"/> floats (contents unspecified).</summary>
    public float* Buffer(int slot, long count)
    {
        var array = _arrays[slot];
        if (array is null || array.LongLength < count + 16)
        {
            // Pinned: the address never changes, so the pointer below stays valid for the array's life.
            array = GC.AllocateArray<float>((int)Math.Max(count + 16, 64), pinned: true);
            _arrays[slot] = array;
            var address = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(array));
            _pointers[slot] = (float*)((address + 63) & ~(nint)63);
        }

        return _pointers[slot];
    }

    /// <summary>Buffer <paramref name="slot"/>, zeroed over the first <paramref name="count"/> floats.</summary>
    public float* ZeroedBuffer(int slot, long count)
    {
        var pointer = Buffer(slot, count);
        new Span<float>(pointer, checked((int)count)).Clear();
        return pointer;
    }

    /// <summary>Grows <see cref="Runs"/> to at least <paramref name="count"/> entries, keeping its contents.</summary>
    public void EnsureRuns(int count)
    {
        if (Runs.Length < count)
        {
            var runs = Runs;
            Array.Resize(ref runs, Math.Max(count, Runs.Length * 2));
            Runs = runs;
        }
    }
}
