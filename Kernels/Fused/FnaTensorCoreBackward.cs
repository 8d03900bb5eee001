using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Common;
using Natten.Kernels.Cuda;
using Natten.Kernels.Runtime;

namespace Natten.Kernels.Fused;

/// <summary>The tensor-core backward kernels for one 16-bit format (plus the float32 kernels it shares), compiled once per accelerator.</summary>
internal sealed class FnaTensorCoreBackwardKernelSet<TFormat, TStorage>
    where TFormat : struct, IHalfFormat
    where TStorage : struct, IElementStorage<ushort>
{
    public FnaTensorCoreBackwardKernelSet(Accelerator accelerator)
    {
        RowTerm = accelerator.LoadAutoGroupedKernel<Index1D, ProblemParams, long, int, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>>(
            FnaBackwardKernels.RowTerm<ushort, TStorage>);
        QueryGrad = accelerator.LoadKernel<ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>>(
            FnaTensorCoreBackwardKernels.QueryGrad<TFormat>);
        KeyValueGrad = accelerator.LoadKernel<ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>>(
            FnaTensorCoreBackwardKernels.KeyValueGrad<TFormat>);
        AdditionalKeyValueGrad = accelerator.LoadKernel<ProblemParams, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>>(
            FnaBackwardKernels.AdditionalKeyValueGrad<ushort, TStorage>);
    }

    public Action<AcceleratorStream, Index1D, ProblemParams, long, int, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>> RowTerm { get; }

    public Action<AcceleratorStream, KernelConfig, ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>> QueryGrad { get; }

    public Action<AcceleratorStream, KernelConfig, ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>> KeyValueGrad { get; }

    public Action<AcceleratorStream, KernelConfig, ProblemParams, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>> AdditionalKeyValueGrad { get; }
}

/// <summary>Host side of the tensor-core backward: limits and the launch sequence (workspace: the row term D only).</summary>
internal static class FnaTensorCoreBackward
{
    private const int AdditionalThreads = 32;

    public const int StaticSharedBytes =
        ((2 * FnaTensorCoreBackwardKernels.MaxScores) + (2 * FnaTensorCoreBackwardKernels.MaxScores / 16)) * sizeof(float)
        + (TensorCore.ScratchWordsPerWarp * FnaTensorCoreKernel.MaxWarps * sizeof(uint));

    public static int QueryGradWords(ProblemParams p, FnaTileShape tile)
        => (tile.QueryTile * (p.HeadDim + p.ValueDim)) + (tile.KeyTile * (p.HeadDim + p.ValueDim)) + (tile.QueryTile * tile.KeyTile);

    public static int KeyValueGradWords(ProblemParams p, FnaTileShape tile)
        => (tile.QueryTile * (p.HeadDim + p.ValueDim)) + (tile.KeyTile * (p.HeadDim + p.ValueDim)) + (2 * tile.QueryTile * tile.KeyTile);

    /// <summary>Why the tensor-core backward cannot run this problem and tile, or null.</summary>
    public static string? Check(ComputeDevice device, ProblemParams p, FnaTileShape tile)
    {
        if (FnaTensorCore.Check(device, p, tile) is { } why)
        {
            return why;
        }

        // dP = dO·Vᵀ contracts over Dv, so the backward needs Dv in whole 16-wide k-steps too.
        if (p.ValueDim % 16 != 0 || p.HeadDim > FnaTensorCoreBackwardKernels.MaxDims || tile.QueryTile * tile.KeyTile > FnaTensorCoreBackwardKernels.MaxScores)
        {
            return $"the tensor-core backward needs Dv % 16 == 0 (Dv={p.ValueDim}), D ≤ {FnaTensorCoreBackwardKernels.MaxDims} "
                 + $"and query tile × KV sub-tile ≤ {FnaTensorCoreBackwardKernels.MaxScores}";
        }

        var bytes = StaticSharedBytes + (Math.Max(QueryGradWords(p, tile), KeyValueGradWords(p, tile)) * sizeof(ushort));
        if (bytes > device.Accelerator.MaxSharedMemoryPerGroup)
        {
            return $"the tensor-core backward with tile shape {tile} needs {bytes} bytes of shared memory; {device.Name} allows {device.Accelerator.MaxSharedMemoryPerGroup}";
        }

        return FnaBackward.Check(device, p, tile);
    }

    public static void Backward<TFormat, TStorage>(
        ComputeDevice device, AcceleratorStream stream, ProblemParams p, FnaTileShape tile,
        ArrayView<ushort> query, ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<ushort> additionalKey, ArrayView<ushort> additionalValue,
        ArrayView<ushort> output, ArrayView<float> lse, ArrayView<ushort> outputGrad,
        ArrayView<ushort> queryGrad, ArrayView<ushort> keyGrad, ArrayView<ushort> valueGrad, ArrayView<ushort> additionalKeyGrad, ArrayView<ushort> additionalValueGrad)
        where TFormat : struct, IHalfFormat
        where TStorage : struct, IElementStorage<ushort>
    {
        var kernels = device.Kernels(a => new FnaTensorCoreBackwardKernelSet<TFormat, TStorage>(a));
        using var rowTerm = device.Accelerator.Allocate1D<float>(p.Rows);
        var extent = device.LaunchExtent(p.Rows);
        kernels.RowTerm(stream, extent, p, p.Rows, extent, output, outputGrad, rowTerm.View);

        var tiles = p.D0 * FnaForwardKernel.TilesPerGroup(p.N0, p.D0, tile.Q0)
            * p.D1 * FnaForwardKernel.TilesPerGroup(p.N1, p.D1, tile.Q1)
            * p.D2 * FnaForwardKernel.TilesPerGroup(p.N2, p.D2, tile.Q2);
        var group = new Index3D(tile.QueryTile * 2, 1, 1);
        kernels.QueryGrad(
            stream,
            new KernelConfig(new Index3D(tiles, p.Heads, p.Batch), group, SharedMemoryConfig.RequestDynamic<ushort>(QueryGradWords(p, tile))),
            p, tile, query, key, value, additionalKey, additionalValue, lse, rowTerm.View, outputGrad, queryGrad);
        kernels.KeyValueGrad(
            stream,
            new KernelConfig(new Index3D(tiles, p.KvHeads, p.Batch), group, SharedMemoryConfig.RequestDynamic<ushort>(KeyValueGradWords(p, tile))),
            p, tile, query, key, value, lse, rowTerm.View, outputGrad, keyGrad, valueGrad);
        if (p.AdditionalTokens > 0)
        {
            kernels.AdditionalKeyValueGrad(
                stream,
                new KernelConfig(
                    new Index3D(p.AdditionalTokens, p.KvHeads, p.Batch), new Index3D(AdditionalThreads, 1, 1),
                    SharedMemoryConfig.RequestDynamic<float>(AdditionalThreads * (p.HeadDim + p.ValueDim))),
                p, query, additionalKey, additionalValue, lse, rowTerm.View, outputGrad, additionalKeyGrad, additionalValueGrad);
        }

        stream.Synchronize();
    }
}
