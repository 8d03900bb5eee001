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
    public static IEnumerable<AcceleratorKind> Accelerators => [AcceleratorKind.Cpu, AcceleratorKind.Cuda];

    [SetUp]
    public void RequireDevice()
    {
        if (!AttentionDevice.IsAvailable(kind))
        {
            Assert.Ignore($"No {kind} accelerator on this machine.");
        }
    }

    [Test]
    public void EveryLaneGetsItsFragmentElements([Values] FragmentLoadChoice loads, [Values(1, 2)] int seed)
    {
        var (compared, wrong) = FragmentLoadProbe.Check(
            DeviceRuntime.Get(kind), loads == FragmentLoadChoice.Matrix ? FragmentLoadKind.Matrix : FragmentLoadKind.Elements, seed);
        Assert.That(compared, Is.EqualTo(FragmentLoadProbe.Blocks.Count * 32 * 8));
        Assert.That(wrong, Is.Zero, $"{wrong} of {compared} registers differ from the m16n8k16 layout");
    }

    [Test]
    public void TheExpectedLayoutIsTheFragmentDefinition()
    {
        // Lane 5 (g = 1, t = 1) of the block at (16, 8): Rows r2 = row 17, columns 18 and 19; Columns r1 = rows 26, 27 of column 9.
        var tile = Enumerable.Range(0, FragmentLoadProbe.TileRows * FragmentLoadProbe.Stride).Select(i => (ushort)i).ToArray();
        var expected = FragmentLoadProbe.Expected(tile, 16, 8);
        ushort At(int row, int col) => (ushort)((row * FragmentLoadProbe.Stride) + col);
        Assert.That(expected[(5 * 8) + 2], Is.EqualTo(TensorCore.Pack(At(17, 18), At(17, 19))));
        Assert.That(expected[(5 * 8) + 4 + 1], Is.EqualTo(TensorCore.Pack(At(26, 9), At(27, 9))));
    }

    /// <summary>Public mirror of the internal <see cref="FragmentLoadKind"/> for test parameters.</summary>
    public enum FragmentLoadChoice
    {
        Matrix,
        Elements,
    }
}
