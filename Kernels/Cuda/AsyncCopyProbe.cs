using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Runtime;

namespace Natten.Kernels.Cuda;

/// <summary>
/// A one-warp check of <see cref="AsyncCopy"/> on a device: shared memory is first filled with a marker, then every lane
/// issues two 16-byte copies in two commit groups — chunks taken from a global sub-view (at a 16-byte offset, so the view
/// pointer's own offset counts) in a shuffled order, some of them zero-filled (src-size 0) — waits for the older group
/// (<c>wait_group 1</c>), barriers and reads a chunk another lane copied, then waits for everything (<c>wait_group 0</c>)
/// and reads the second group the same way. The result is compared with the host's expectation element by element. On CUDA
/// this runs the real <c>cp.async</c>; elsewhere the synchronous emulation.
/// </summary>
internal static class AsyncCopyProbe
{
    /// <summary>Chunks (16 bytes, 8 elements) each lane copies: one per commit group.</summary>
    public const int ChunksPerLane = 2;

    /// <summary>Chunks in the probe's shared tile.</summary>
    public const int Chunks = 32 * ChunksPerLane;

    /// <summary>Chunks of the global source (more than are copied, so the shuffle skips some).</summary>
    public const int SourceChunks = 96;

    /// <summary>Elements the global buffer holds before the source view starts (16 bytes: the view is aligned, not at the buffer start).</summary>
    public const int SourceOffset = AsyncCopy.Elements;

    /// <summary>The shared tile's marker: any element still holding it was neither copied nor zero-filled.</summary>
    public const ushort Marker = 0xBEEF;

    /// <summary>Elements compared and elements that differ on <paramref name="device"/>.</summary>
    public static (int Compared, int Wrong) Check(ComputeDevice device, int seed = 1)
    {
        var rng = new Random(seed);
        var data = new ushort[SourceOffset + (SourceChunks * AsyncCopy.Elements)];
        for (var i = 0; i < data.Length; i++)
        {
            data[i] = (ushort)rng.Next(1, 65535);
        }

        // Chunk c of the tile comes from source chunk map[c], or is zero-filled (-1) for every fifth chunk.
        var map = Enumerable.Range(0, SourceChunks).OrderBy(_ => rng.Next()).Take(Chunks).ToArray();
        for (var c = 0; c < Chunks; c += 5)
        {
            map[c] = -1;
        }

        var accelerator = device.Accelerator;
        var launch = device.Kernels(a => new ProbeKernels(a)).Launch;
        using var source = accelerator.Allocate1D(data);
        using var chunks = accelerator.Allocate1D(map);
        using var result = accelerator.Allocate1D<ushort>(Chunks * AsyncCopy.Elements);
        launch(accelerator.DefaultStream, new KernelConfig(1, 32), source.View.SubView(SourceOffset, SourceChunks * AsyncCopy.Elements), chunks.View, result.View);
        accelerator.Synchronize();
        var actual = result.GetAsArray1D();
        var expected = Expected(data, map);
        var wrong = 0;
        for (var i = 0; i < expected.Length; i++)
        {
            wrong += actual[i] == expected[i] ? 0 : 1;
        }

        return (expected.Length, wrong);
    }

    /// <summary>
    /// The result the probe must produce: result chunk r holds tile chunk r, i.e. source chunk map[r] (elements after
    /// <see cref="SourceOffset"/>) or zeros.
    /// </summary>
    public static ushort[] Expected(ushort[] data, int[] map)
    {
        var expected = new ushort[Chunks * AsyncCopy.Elements];
        for (var c = 0; c < Chunks; c++)
        {
            for (var i = 0; i < AsyncCopy.Elements; i++)
            {
                expected[(c * AsyncCopy.Elements) + i] = map[c] < 0 ? (ushort)0 : data[SourceOffset + (map[c] * AsyncCopy.Elements) + i];
            }
        }

        return expected;
    }

    /// <summary>One warp: lane L copies tile chunk L in group 1 and chunk 32 + L in group 2, then writes out chunks (L + 1) % 32 and 32 + (L + 1) % 32.</summary>
    public static void Probe(ArrayView<ushort> source, ArrayView<int> map, ArrayView<ushort> result)
    {
        var tile = SharedMemory.Allocate<ushort>(Chunks * AsyncCopy.Elements);
        var lane = Group.IdxX;
        for (var i = lane; i < Chunks * AsyncCopy.Elements; i += 32)
        {
            tile[i] = Marker;
        }

        Group.Barrier();
        var first = lane;
        var second = 32 + lane;
        AsyncCopy.Copy16(tile, first * AsyncCopy.Elements, source, (long)map[first] * AsyncCopy.Elements, map[first] >= 0);
        AsyncCopy.Commit();
        AsyncCopy.Copy16(tile, second * AsyncCopy.Elements, source, (long)map[second] * AsyncCopy.Elements, map[second] >= 0);
        AsyncCopy.Commit();

        // The older group has landed in every lane; read a neighbour's chunk of it.
        AsyncCopy.WaitAllButNewest();
        Group.Barrier();
        var neighbour = (lane + 1) % 32;
        for (var i = 0; i < AsyncCopy.Elements; i++)
        {
            result[(neighbour * AsyncCopy.Elements) + i] = tile[(neighbour * AsyncCopy.Elements) + i];
        }

        AsyncCopy.WaitAll();
        Group.Barrier();
        for (var i = 0; i < AsyncCopy.Elements; i++)
        {
            result[((32 + neighbour) * AsyncCopy.Elements) + i] = tile[((32 + neighbour) * AsyncCopy.Elements) + i];
        }
    }

    private sealed class ProbeKernels(Accelerator accelerator)
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<ushort>, ArrayView<int>, ArrayView<ushort>> Launch { get; } =
            accelerator.LoadKernel<ArrayView<ushort>, ArrayView<int>, ArrayView<ushort>>(Probe);
    }
}
