using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Common;
using Natten.Kernels.Runtime;

namespace Natten.Kernels.Fused;

/// <summary>The fused backward kernels for one storage type, compiled once per accelerator.</summary>
internal sealed class FnaBackwardKernelSet<T, TS>
    where T : unmanaged
    where TS : struct, IElementStorage<T>
{
    public FnaBackwardKernelSet(Accelerator accelerator)
    {
        RowTerm = accelerator.LoadAutoGroupedKernel<Index1D, ProblemParams, long, int, ArrayView<T>, ArrayView<T>, ArrayView<float>>(
            FnaBackwardKernels.RowTerm<T, TS>);
        QueryGrad = accelerator.LoadKernel<ProblemParams, FnaTileShape, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>>(
            FnaBackwardKernels.QueryGrad<T, TS>);
        KeyValueGrad = accelerator.LoadKernel<ProblemParams, FnaTileShape, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>, ArrayView<T>>(
            FnaBackwardKernels.KeyValueGrad<T, TS>);
        AdditionalKeyValueGrad = accelerator.LoadKernel<ProblemParams, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>, ArrayView<T>>(
            FnaBackwardKernels.AdditionalKeyValueGrad<T, TS>);
    }

    public Action<AcceleratorStream, Index1D, ProblemParams, long, int, ArrayView<T>, ArrayView<T>, ArrayView<float>> RowTerm { get; }

    public Action<AcceleratorStream, KernelConfig, ProblemParams, FnaTileShape, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>> QueryGrad { get; }

    public Action<AcceleratorStream, KernelConfig, ProblemParams, FnaTileShape, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>, ArrayView<T>> KeyValueGrad { get; }

    public Action<AcceleratorStream, KernelConfig, ProblemParams, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>, ArrayView<T>> AdditionalKeyValueGrad { get; }
}

/// <summary>
/// Host side of the fused backward: the row term D, then dQ per query tile, dK/dV per key tile and
/// the additional tokens' gradients. Deterministic (no atomics); the only workspace is D (B·N·H floats).
/// </summary>
internal static class FnaBackward
{
    /// <summary>Threads that reduce one additional token's gradients (a power of two).</summary>
    private const int AdditionalThreads = 32;

    public static long WorkspaceBytes(ProblemParams p) => sizeof(float) * p.Rows;

    public static int QueryGradSharedFloats(ProblemParams p, FnaTileShape tile)
        => (tile.QueryTile * 2 * (p.HeadDim + 1)) + (tile.QueryTile * (p.ValueDim + 1)) + (tile.KeyTile * (p.HeadDim + p.ValueDim));

    public static int KeyValueGradSharedFloats(ProblemParams p, FnaTileShape tile)
        => (tile.QueryTile * 2 * (p.HeadDim + 1)) + (tile.QueryTile * 2 * (p.ValueDim + 1)) + (tile.KeyTile * (p.HeadDim + p.ValueDim + 2));

    /// <summary>Why the backward cannot run with this tile shape on the device, or null.</summary>
    public static string? Check(ComputeDevice device, ProblemParams p, FnaTileShape tile)
        => device.CheckSharedMemory(
                $"the backward with tile shape {tile}, D={p.HeadDim}, Dv={p.ValueDim}",
                (long)Math.Max(QueryGradSharedFloats(p, tile), KeyValueGradSharedFloats(p, tile)) * sizeof(float))
            ?? CheckAdditional(device, p);

    /// <summary>Why the additional tokens' gradient kernel (which the tensor-core backward uses too) cannot run, or null.</summary>
    public static string? CheckAdditional(ComputeDevice device, ProblemParams p)
        => p.AdditionalTokens > 0
            ? device.CheckSharedMemory("the additional tokens' gradients", (long)AdditionalThreads * (p.HeadDim + p.ValueDim) * sizeof(float))
            : null;

    public static void Backward<T, TS>(
        ComputeDevice device, AcceleratorStream stream, ProblemParams p, FnaTileShape tile,
        ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<T> additionalKey, ArrayView<T> additionalValue,
        ArrayView<T> output, ArrayView<float> lse, ArrayView<T> outputGrad,
        ArrayView<T> queryGrad, ArrayView<T> keyGrad, ArrayView<T> valueGrad, ArrayView<T> additionalKeyGrad, ArrayView<T> additionalValueGrad)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        var kernels = device.Kernels(a => new FnaBackwardKernelSet<T, TS>(a));
        var tiles = p.D0 * FnaForwardKernel.TilesPerGroup(p.N0, p.D0, tile.Q0)
            * p.D1 * FnaForwardKernel.TilesPerGroup(p.N1, p.D1, tile.Q1)
            * p.D2 * FnaForwardKernel.TilesPerGroup(p.N2, p.D2, tile.Q2);
        var group = new Index3D(tile.QueryTile, 1, 1);
        var queryConfig = new KernelConfig(new Index3D(tiles, p.Heads, p.Batch), group, SharedMemoryConfig.RequestDynamic<float>(QueryGradSharedFloats(p, tile)));
        var keyValueConfig = new KernelConfig(new Index3D(tiles, p.KvHeads, p.Batch), group, SharedMemoryConfig.RequestDynamic<float>(KeyValueGradSharedFloats(p, tile)));
        var additionalConfig = AdditionalConfig(p);
        device.PrepareSharedMemory(kernels.QueryGrad, queryConfig);
        device.PrepareSharedMemory(kernels.KeyValueGrad, keyValueConfig);
        if (p.AdditionalTokens > 0)
        {
            device.PrepareSharedMemory(kernels.AdditionalKeyValueGrad, additionalConfig);
        }

        using var rowTerm = device.Accelerator.Allocate1D<float>(p.Rows);
        var extent = device.LaunchExtent(p.Rows);
        kernels.RowTerm(stream, extent, p, p.Rows, extent, output, outputGrad, rowTerm.View);
        kernels.QueryGrad(stream, queryConfig, p, tile, query, key, value, additionalKey, additionalValue, lse, rowTerm.View, outputGrad, queryGrad);
        kernels.KeyValueGrad(stream, keyValueConfig, p, tile, query, key, value, lse, rowTerm.View, outputGrad, keyGrad, valueGrad);
        if (p.AdditionalTokens > 0)
        {
            kernels.AdditionalKeyValueGrad(
                stream, additionalConfig, p, query, additionalKey, additionalValue, lse, rowTerm.View, outputGrad, additionalKeyGrad, additionalValueGrad);
        }

        stream.Synchronize(); // the row term's buffer is freed on return
    }

    /// <summary>The launch of the additional tokens' gradient kernel: one group of <see cref="AdditionalThreads"/> per token, KV head and batch.</summary>
    public static KernelConfig AdditionalConfig(ProblemParams p)
        => new(
            new Index3D(p.AdditionalTokens, p.KvHeads, p.Batch), new Index3D(AdditionalThreads, 1, 1),
            SharedMemoryConfig.RequestDynamic<float>(AdditionalThreads * (p.HeadDim + p.ValueDim)));
}
