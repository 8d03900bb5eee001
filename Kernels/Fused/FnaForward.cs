using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Common;
using Natten.Kernels.Runtime;

namespace Natten.Kernels.Fused;

/// <summary>The fused forward kernel for one storage type, compiled once per accelerator.</summary>
internal sealed class FnaKernelSet<T, TS>
    where T : unmanaged
    where TS : struct, IElementStorage<T>
{
    public FnaKernelSet(Accelerator accelerator)
        => Forward = accelerator.LoadKernel<ProblemParams, FnaTileShape, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, int>(
            FnaForwardKernel.Forward<T, TS>);

    public Action<AcceleratorStream, KernelConfig, ProblemParams, FnaTileShape, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, int> Forward { get; }
}

/// <summary>Host side of the fused forward: the launch configuration and the launch itself. No workspace.</summary>
internal static class FnaForward
{
    /// <summary>Why <paramref name="tile"/> cannot run problem <paramref name="p"/> on <paramref name="device"/>, or null.</summary>
    public static string? Check(ComputeDevice device, ProblemParams p, FnaTileShape tile)
        => CheckGrid(device, p, tile)
            ?? device.CheckSharedMemory($"tile shape {tile} with D={p.HeadDim}, Dv={p.ValueDim}", (long)tile.SharedFloats(p.HeadDim, p.ValueDim) * sizeof(float));

    /// <summary>
    /// The limits every fused forward shares (tile extents, one thread per query, the launch grid), without this kernel's shared
    /// memory: the tensor-core and TF32 kernels check their own.
    /// </summary>
    public static string? CheckGrid(ComputeDevice device, ProblemParams p, FnaTileShape tile)
    {
        if (tile.Q0 < 1 || tile.Q1 < 1 || tile.Q2 < 1 || tile.K0 < 1 || tile.K1 < 1 || tile.K2 < 1)
        {
            return $"tile shape {tile} has an extent below 1";
        }

        if (tile.QueryTile > device.Accelerator.MaxNumThreadsPerGroup)
        {
            return $"a {tile.QueryTile}-query tile needs {tile.QueryTile} threads per group; {device.Name} allows {device.Accelerator.MaxNumThreadsPerGroup}";
        }

        var tiles = (long)p.D0 * FnaForwardKernel.TilesPerGroup(p.N0, p.D0, tile.Q0)
            * p.D1 * FnaForwardKernel.TilesPerGroup(p.N1, p.D1, tile.Q1)
            * p.D2 * FnaForwardKernel.TilesPerGroup(p.N2, p.D2, tile.Q2);
        if (tiles > int.MaxValue || p.Heads > 65535 || p.Batch > 65535)
        {
            return $"the grid ({tiles} tiles × {p.Heads} heads × {p.Batch} batch) exceeds the launch limits";
        }

        return null;
    }

    public static void Forward<T, TS>(
        ComputeDevice device, AcceleratorStream stream, ProblemParams p, FnaTileShape tile,
        ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<T> additionalKey, ArrayView<T> additionalValue,
        ArrayView<T> output, ArrayView<float> lse)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        var kernels = device.Kernels(a => new FnaKernelSet<T, TS>(a));
        var tiles = p.D0 * FnaForwardKernel.TilesPerGroup(p.N0, p.D0, tile.Q0)
            * p.D1 * FnaForwardKernel.TilesPerGroup(p.N1, p.D1, tile.Q1)
            * p.D2 * FnaForwardKernel.TilesPerGroup(p.N2, p.D2, tile.Q2);
        var config = new KernelConfig(
            new Index3D(tiles, p.Heads, p.Batch),
            new Index3D(tile.QueryTile, 1, 1),
            SharedMemoryConfig.RequestDynamic<float>(tile.SharedFloats(p.HeadDim, p.ValueDim)));
        device.PrepareSharedMemory(kernels.Forward, config);
        kernels.Forward(stream, config, p, tile, query, key, value, additionalKey, additionalValue, output, lse, lse.Length > 0 ? 1 : 0);
    }
}
