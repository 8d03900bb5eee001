using Natten.Kernels.Cuda;

namespace Natten.Diagnostics;

/// <summary>The result of one device self-check: what was compared and how many values differed.</summary>
/// <param name="What">The check, e.g. <c>fragment loads (ldmatrix)</c>.</param>
/// <param name="Compared">Values compared.</param>
/// <param name="Wrong">Values that differed from the expected ones.</param>
/// <param name="Unit">What a value is, plural (e.g. <c>registers</c>, <c>elements</c>).</param>
/// <param name="Skipped">Why the check does not apply on this device (then nothing was compared), or null.</param>
public sealed record SelfCheckResult(string What, int Compared, int Wrong, string Unit = "registers", string? Skipped = null)
{
    /// <summary>Whether every value matched.</summary>
    public bool Passed => Skipped is null && Compared > 0 && Wrong == 0;
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

    /// <summary>
    /// The 16-byte asynchronous global→shared copy the tensor-core forward stages KV sub-tiles with, on <paramref name="device"/>:
    /// <c>cp.async.cg</c> with zero fill, two commit groups and both waits (its synchronous emulation off CUDA), every copied
    /// element against the host's expectation.
    /// </summary>
    public static SelfCheckResult AsyncCopy(AttentionDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        var (compared, wrong) = AsyncCopyProbe.Check(device.Compute);
        return new("async copy (cp.async, zero fill)", compared, wrong, "elements");
    }

    /// <summary>
    /// On CUDA: the view pointers <c>ldmatrix</c> and <c>cp.async</c> are given are generic addresses in the shared and global
    /// state spaces (<c>isspacep</c>), and dynamic shared memory starts 16-byte aligned after the generated kernels' static
    /// shared memory. Elsewhere skipped (no state spaces).
    /// </summary>
    public static SelfCheckResult AddressSpaces(AttentionDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        const string what = "view address spaces and shared alignment";
        if (AddressSpaceProbe.Check(device.Compute) is not { } values)
        {
            return new(what, 0, 0, "values", "only CUDA has state spaces");
        }

        var wrong = values.Zip(AddressSpaceProbe.Expected).Count(pair => pair.First != pair.Second);
        return new(what, values.Length, wrong, "values");
    }

    /// <summary>Every check, in the order <c>natten selftest</c> prints them: <see cref="FragmentLoads"/>, <see cref="AsyncCopy"/>, <see cref="AddressSpaces"/>.</summary>
    public static IReadOnlyList<SelfCheckResult> All(AttentionDevice device) => [.. FragmentLoads(device), AsyncCopy(device), AddressSpaces(device)];
}
