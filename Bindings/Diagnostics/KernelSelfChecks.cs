using Natten.Kernels.Cuda;

namespace Natten.Diagnostics;

/// <summary>The result of one device self-check: what was compared and how many values differed.</summary>
/// <param name="What">The check, e.g. <c>fragment loads (ldmatrix)</c>.</param>
/// <param name="Compared">Values compared.</param>
/// <param name="Wrong">Values that differed from the expected ones.</param>
public sealed record SelfCheckResult(string What, int Compared, int Wrong)
{
    /// <summary>Whether every value matched.</summary>
    public bool Passed => Compared > 0 && Wrong == 0;
}

/// <summary>
/// Small exact checks of the intrinsics the kernels are built on, run on a device: on a GPU they exercise the real
/// instructions (e.g. <c>ldmatrix</c>), elsewhere the lane-by-lane models the CI tests use.
/// </summary>
public static class KernelSelfChecks
{
    /// <summary>
    /// The tensor-core fragment loads on <paramref name="device"/>: <c>ldmatrix</c> (x4 and x4.trans; its model off CUDA)
    /// and element loads, every lane's registers against the m16n8k16 layout for blocks at four offsets.
    /// </summary>
    public static IReadOnlyList<SelfCheckResult> FragmentLoads(AttentionDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        var matrix = FragmentLoadProbe.Check(device.Compute, FragmentLoadKind.Matrix);
        var elements = FragmentLoadProbe.Check(device.Compute, FragmentLoadKind.Elements);
        return
        [
            new("fragment loads (ldmatrix)", matrix.Compared, matrix.Wrong),
            new("fragment loads (elements)", elements.Compared, elements.Wrong),
        ];
    }
}
