using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Cuda;
using Natten.Kernels.Runtime;

namespace Natten.Tests.Kernels;

/// <summary>
/// The fragment loads the register-resident tensor-core kernels use (<see cref="IFragmentLoads"/>): element loads
/// and <c>ldmatrix</c> (real on CUDA, modelled lane by lane on the CPU accelerator) must give every lane exactly the
/// elements the m16n8k16 layout assigns it, for blocks at several offsets of a padded shared tile.
/// </summary>
[TestFixtureSource(nameof(Accelerators))]
public sealed class FragmentLoadTests(AcceleratorKind kind)
{
    private const int TileRows = 48;
    private const int Stride = 40;

    public static IEnumerable<AcceleratorKind> Accelerators => [AcceleratorKind.Cpu, AcceleratorKind.Cuda];

    [SetUp]
    public void RequireDevice()
    {
        if (!AttentionDevice.IsAvailable(kind))
        {
            Assert.Ignore($"No {kind} accelerator on this machine.");
        }
    }

    [TestCase(false, 0, 0)]
    [TestCase(false, 16, 8)]
    [TestCase(false, 32, 24)]
    [TestCase(true, 0, 0)]
    [TestCase(true, 16, 8)]
    [TestCase(true, 24, 16)]
    public void EveryLaneGetsItsFragmentElements(bool matrix, int row0, int col0)
    {
        var rng = new Random((row0 * 100) + col0);

        // Distinct elements, so that any misplaced one is caught.
        var tile = Enumerable.Range(0, TileRows * Stride).Select(_ => (ushort)rng.Next(1, 65535)).ToArray();
        var device = DeviceRuntime.Get(kind);
        using var tileBuffer = device.Accelerator.Allocate1D(tile);
        using var result = device.Accelerator.Allocate1D<uint>(32 * 8);
        var launch = matrix
            ? device.Accelerator.LoadStreamKernel<ArrayView<ushort>, int, int, ArrayView<uint>>(FragmentLoadKernels.Probe<MatrixLoads>)
            : device.Accelerator.LoadStreamKernel<ArrayView<ushort>, int, int, ArrayView<uint>>(FragmentLoadKernels.Probe<ElementLoads>);
        launch(new KernelConfig(1, 32), tileBuffer.View, row0, col0, result.View);
        device.Accelerator.Synchronize();
        var registers = result.GetAsArray1D();

        ushort At(int row, int col) => tile[(row * Stride) + col];
        for (var lane = 0; lane < 32; lane++)
        {
            var g = lane / 4;
            var t = lane % 4;
            for (var m = 0; m < 4; m++)
            {
                var top = row0 + ((m % 2) * 8);
                var left = col0 + ((m / 2) * 8);
                var rows = TensorCore.Pack(At(top + g, left + (2 * t)), At(top + g, left + (2 * t) + 1));
                var columns = TensorCore.Pack(At(top + (2 * t), left + g), At(top + (2 * t) + 1, left + g));
                Assert.That(registers[(lane * 8) + m], Is.EqualTo(rows), $"Rows: lane {lane}, r{m}");
                Assert.That(registers[(lane * 8) + 4 + m], Is.EqualTo(columns), $"Columns: lane {lane}, r{m}");
            }
        }
    }
}

public static class FragmentLoadKernels
{
    /// <summary>One warp: stages the tile in shared memory, loads the block at (row0, col0) both ways, stores every lane's 8 registers.</summary>
    internal static void Probe<TLoads>(ArrayView<ushort> tile, int row0, int col0, ArrayView<uint> result)
        where TLoads : struct, IFragmentLoads
    {
        var shared = SharedMemory.Allocate<ushort>(48 * 40);
        var lane = Group.IdxX;
        for (var i = lane; i < shared.IntLength; i += 32)
        {
            shared[i] = tile[i];
        }

        Group.Barrier();
        TLoads.Rows(shared, 40, row0, col0, out var r0, out var r1, out var r2, out var r3);
        TLoads.Columns(shared, 40, row0, col0, out var c0, out var c1, out var c2, out var c3);
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
}
