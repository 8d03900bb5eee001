using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Runtime;

namespace Natten.Kernels.Cuda;

/// <summary>
/// A one-warp check of an <see cref="IFragmentLoads"/> on a device: a padded tile of distinct 16-bit values is staged
/// in shared memory, blocks at several offsets are loaded with <see cref="IFragmentLoads.Rows"/> and
/// <see cref="IFragmentLoads.Columns"/>, and every lane's registers are compared with the m16n8k16 layout computed on
/// the host. On CUDA this runs the real <c>ldmatrix</c>; elsewhere its lane-by-lane model.
/// </summary>
internal static class FragmentLoadProbe
{
    /// <summary>Rows of the probe tile.</summary>
    public const int TileRows = 48;

    /// <summary>16-bit elements per probe row (a multiple of 8: every ldmatrix row address is 16-byte aligned).</summary>
    public const int Stride = 40;

    /// <summary>Block origins (row, column) the check loads: the origin, and offsets within the padded tile.</summary>
    public static IReadOnlyList<(int Row, int Col)> Blocks { get; } = [(0, 0), (16, 8), (24, 16), (32, 24)];

    /// <summary>Registers compared and registers that differ, for <paramref name="kind"/> on <paramref name="device"/>.</summary>
    public static (int Compared, int Wrong) Check(ComputeDevice device, FragmentLoadKind kind, int seed = 1)
    {
        var rng = new Random(seed);
        var tile = new ushort[TileRows * Stride];
        for (var i = 0; i < tile.Length; i++)
        {
            tile[i] = (ushort)rng.Next(1, 65535);
        }

        var accelerator = device.Accelerator;
        var launch = kind == FragmentLoadKind.Matrix
            ? device.Kernels(a => new ProbeKernels<MatrixLoads>(a)).Launch
            : device.Kernels(a => new ProbeKernels<ElementLoads>(a)).Launch;
        using var tileBuffer = accelerator.Allocate1D(tile);
        using var result = accelerator.Allocate1D<uint>(32 * 8);
        int compared = 0, wrong = 0;
        foreach (var (row0, col0) in Blocks)
        {
            launch(accelerator.DefaultStream, new KernelConfig(1, 32), tileBuffer.View, row0, col0, result.View);
            accelerator.Synchronize();
            var registers = result.GetAsArray1D();
            var expected = Expected(tile, row0, col0);
            for (var i = 0; i < expected.Length; i++)
            {
                compared++;
                wrong += registers[i] == expected[i] ? 0 : 1;
            }
        }

        return (compared, wrong);
    }

    /// <summary>Per lane 8 registers: Rows r0 … r3, then Columns r0 … r3, from the layout's definition.</summary>
    public static uint[] Expected(ushort[] tile, int row0, int col0)
    {
        ushort At(int row, int col) => tile[(row * Stride) + col];
        var expected = new uint[32 * 8];
        for (var lane = 0; lane < 32; lane++)
        {
            var g = lane / 4;
            var t = lane % 4;
            for (var m = 0; m < 4; m++)
            {
                var top = row0 + ((m % 2) * 8);
                var left = col0 + ((m / 2) * 8);
                expected[(lane * 8) + m] = TensorCore.Pack(At(top + g, left + (2 * t)), At(top + g, left + (2 * t) + 1));
                expected[(lane * 8) + 4 + m] = TensorCore.Pack(At(top + (2 * t), left + g), At(top + (2 * t) + 1, left + g));
            }
        }

        return expected;
    }

    /// <summary>One warp: stages the tile in shared memory, loads the block at (row0, col0) both ways, stores every lane's 8 registers.</summary>
    public static void Probe<TLoads>(ArrayView<ushort> tile, int row0, int col0, ArrayView<uint> result)
        where TLoads : struct, IFragmentLoads
    {
        var shared = SharedMemory.Allocate<ushort>(TileRows * Stride);
        var lane = Group.IdxX;
        for (var i = lane; i < TileRows * Stride; i += 32)
        {
            shared[i] = tile[i];
        }

        Group.Barrier();
        TLoads.Rows(shared, Stride, row0, col0, out var r0, out var r1, out var r2, out var r3);
        TLoads.Columns(shared, Stride, row0, col0, out var c0, out var c1, out var c2, out var c3);
        var at = lane * 8;
        result[at] = r0;
        result[at + 1] = r1;
        result[at + 2] = r2;
        result[at + 3] = r3;
        result[at + 4] = c0;
        result[at + 5] = c1;
        result[at + 6] = c2;
        result[at + 7] = c3;
    }

    private sealed class ProbeKernels<TLoads>(Accelerator accelerator)
        where TLoads : struct, IFragmentLoads
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<ushort>, int, int, ArrayView<uint>> Launch { get; } =
            accelerator.LoadKernel<ArrayView<ushort>, int, int, ArrayView<uint>>(Probe<TLoads>);
    }
}
