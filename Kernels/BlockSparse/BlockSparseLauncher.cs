using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Common;
using Natten.Kernels.Runtime;

namespace Natten.Kernels.BlockSparse;

/// <summary>
/// Host side of the block-sparse kernels: whether a device can run a problem, and the launches.
/// Launch-time code does no validation of its own (Bindings did it); it only configures and launches.
/// </summary>
internal static class BlockSparseLauncher
{
    /// <summary>Why the kernels cannot run <paramref name="p"/> with <paramref name="tiles"/> on <paramref name="device"/>, or null.</summary>
    public static string? Check(ComputeDevice device, BlockSparseParams p, BlockSparseTiles tiles, bool backward)
    {
        var accelerator = device.Accelerator;
        if (tiles.Queries < 1 || tiles.Keys < 1 || tiles.KeyThreads < 1 || tiles.StagedQueries < 1)
        {
            return $"tiles {tiles} have an extent below 1";
        }

        var threads = Math.Max(tiles.Queries, backward ? tiles.KeyThreads : 1);
        if (threads > accelerator.MaxNumThreadsPerGroup)
        {
            return $"tiles {tiles} need {threads} threads per group; {device.Name} allows {accelerator.MaxNumThreadsPerGroup}";
        }

        var floats = backward
            ? Math.Max(tiles.QueryGradSharedFloats(p.HeadDim, p.ValueDim), tiles.KeyValueGradSharedFloats(p.HeadDim, p.ValueDim))
            : tiles.ForwardSharedFloats(p.HeadDim, p.ValueDim);
        if (device.CheckSharedMemory($"tiles {tiles} with D={p.HeadDim}, Dv={p.ValueDim}", (long)floats * sizeof(float)) is { } why)
        {
            return why;
        }

        var groups = (long)p.QueryBlocks * tiles.QueryGroupsPerBlock(p.QueryBlock);
        var keyGroups = (long)p.KeyBlocks * tiles.KeyGroupsPerBlock(p.KeyBlock);
        if (Math.Max(groups, keyGroups) > int.MaxValue || p.Heads > 65535 || p.Batch > 65535)
        {
            return $"the grid ({Math.Max(groups, keyGroups)} groups × {p.Heads} heads × {p.Batch} batch) exceeds the launch limits";
        }

        return null;
    }

    /// <summary>
    /// Workspace of the backward: the row term D, one float per query row; plus, when a bias gradient is
    /// wanted, that of <paramref name="biasGradient"/> (see <see cref="BiasGradientTarget.WorkspaceFloats"/>).
    /// </summary>
    public static long BackwardWorkspaceBytes(BlockSparseParams p, in BiasGradientTarget biasGradient = default)
        => sizeof(float) * (p.QueryRows + biasGradient.WorkspaceFloats(p));

    public static void Forward<T, TS, TMask, TBias>(
        ComputeDevice device, AcceleratorStream stream, BlockSparseParams p, BlockSparseTiles tiles, BlockList blocks, TMask mask, TBias bias,
        ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<T> output, ArrayView<float> lse)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        var kernels = device.Kernels(a => new BlockSparseForwardKernelSet<T, TS, TMask, TBias>(a));
        var config = new KernelConfig(
            new Index3D(p.QueryBlocks * tiles.QueryGroupsPerBlock(p.QueryBlock), p.Heads, p.Batch),
            new Index3D(tiles.Queries, 1, 1),
            SharedMemoryConfig.RequestDynamic<float>(tiles.ForwardSharedFloats(p.HeadDim, p.ValueDim)));
        device.PrepareSharedMemory(kernels.Forward, config);
        kernels.Forward(stream, config, p, tiles, blocks, mask, bias, query, key, value, output, lse, lse.Length > 0 ? 1 : 0);
    }

    /// <summary>
    /// The row term, then dQ per query block (handing dS to the bias-gradient sink when one is wanted, then
    /// reducing it in fixed order) and dK/dV per key block; waits for the stream (the workspaces are freed on return).
    /// </summary>
    public static void Backward<T, TS, TMask, TBias>(
        ComputeDevice device, AcceleratorStream stream, BlockSparseParams p, BlockSparseTiles tiles, BlockList blocks, BlockList transposed,
        TMask mask, TBias bias, ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<T> output, ArrayView<float> lse,
        ArrayView<T> outputGrad, ArrayView<T> queryGrad, ArrayView<T> keyGrad, ArrayView<T> valueGrad, BiasGradientTarget biasGradient = default)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        var kernels = device.Kernels(a => new BlockSparseBackwardKernelSet<T, TS, TMask, TBias>(a));
        var rows = device.Kernels(a => new BlockSparseRowTermSet<T, TS>(a));
        var queryConfig = new KernelConfig(
            new Index3D(p.QueryBlocks * tiles.QueryGroupsPerBlock(p.QueryBlock), p.Heads, p.Batch),
            new Index3D(tiles.Queries, 1, 1),
            SharedMemoryConfig.RequestDynamic<float>(tiles.QueryGradSharedFloats(p.HeadDim, p.ValueDim)));
        var keyValueConfig = new KernelConfig(
            new Index3D(p.KeyBlocks * tiles.KeyGroupsPerBlock(p.KeyBlock), p.KvHeads, p.Batch),
            new Index3D(tiles.KeyThreads, 1, 1),
            SharedMemoryConfig.RequestDynamic<float>(tiles.KeyValueGradSharedFloats(p.HeadDim, p.ValueDim)));
        PrepareQueryGrad<T, TS, TMask, TBias>(device, kernels, queryConfig, biasGradient.Kind);
        device.PrepareSharedMemory(kernels.KeyValueGrad, keyValueConfig);

        using var rowTerm = device.Accelerator.Allocate1D<float>(p.QueryRows);
        var extent = device.LaunchExtent(p.QueryRows);
        rows.RowTerm(stream, extent, p.ValueDim, p.QueryRows, extent, output, outputGrad, rowTerm.View);
        if (biasGradient.Kind == BiasGradientKind.None)
        {
            kernels.QueryGrad(stream, queryConfig, p, tiles, blocks, mask, bias, query, key, value, lse, rowTerm.View, outputGrad, queryGrad, default);
        }
        else
        {
            QueryGradWithBiasGradient<T, TS, TMask, TBias>(
                device, stream, queryConfig, p, tiles, blocks, mask, bias, query, key, value, lse, rowTerm.View, outputGrad, queryGrad, biasGradient);
        }

        kernels.KeyValueGrad(stream, keyValueConfig, p, tiles, transposed, mask, bias, query, key, value, lse, rowTerm.View, outputGrad, keyGrad, valueGrad);
        stream.Synchronize();
    }

    /// <summary>Shared-memory preparation (<see cref="ComputeDevice.PrepareSharedMemory"/>) of the dQ kernel the backward will launch for <paramref name="kind"/>.</summary>
    private static void PrepareQueryGrad<T, TS, TMask, TBias>(
        ComputeDevice device, BlockSparseBackwardKernelSet<T, TS, TMask, TBias> kernels, in KernelConfig config, BiasGradientKind kind)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        switch (kind)
        {
            case BiasGradientKind.Direct:
                device.PrepareSharedMemory(device.Kernels(a => new BlockSparseBiasGradKernelSet<T, TS, TMask, TBias, DirectBiasGradient>(a)).QueryGrad, config);
                break;
            case BiasGradientKind.Pairs:
                device.PrepareSharedMemory(device.Kernels(a => new BlockSparseBiasGradKernelSet<T, TS, TMask, TBias, PairBiasGradient>(a)).QueryGrad, config);
                break;
            case BiasGradientKind.Table:
                device.PrepareSharedMemory(device.Kernels(a => new BlockSparseBiasGradKernelSet<T, TS, TMask, TBias, RowTableBiasGradient>(a)).QueryGrad, config);
                break;
            default:
                device.PrepareSharedMemory(kernels.QueryGrad, config);
                break;
        }
    }

    /// <summary>The dQ kernel with the sink <paramref name="target"/> asks for, and its fixed-order reduction (<see cref="BiasGradientRun"/>).</summary>
    private static void QueryGradWithBiasGradient<T, TS, TMask, TBias>(
        ComputeDevice device, AcceleratorStream stream, KernelConfig config, BlockSparseParams p, BlockSparseTiles tiles, BlockList blocks,
        TMask mask, TBias bias, ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<float> lse, ArrayView<float> rowTerm,
        ArrayView<T> outputGrad, ArrayView<T> queryGrad, in BiasGradientTarget target)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
        => BiasGradientRun.Execute(
            device, stream, p, blocks, target,
            new QueryGradProducer<T, TS, TMask, TBias>(device, stream, config, p, tiles, blocks, mask, bias, query, key, value, lse, rowTerm, outputGrad, queryGrad));

    /// <summary>The fused dQ kernel compiled for the sink it is given.</summary>
    private readonly struct QueryGradProducer<T, TS, TMask, TBias>(
        ComputeDevice device, AcceleratorStream stream, KernelConfig config, BlockSparseParams p, BlockSparseTiles tiles, BlockList blocks,
        TMask mask, TBias bias, ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<float> lse, ArrayView<float> rowTerm,
        ArrayView<T> outputGrad, ArrayView<T> queryGrad) : IBiasGradientProducer
        where T : unmanaged
        where TS : struct, IElementStorage<T>
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        public void Produce<TSink>(TSink sink)
            where TSink : struct, IBiasGradientSink
            => device.Kernels(a => new BlockSparseBiasGradKernelSet<T, TS, TMask, TBias, TSink>(a)).QueryGrad(
                stream, config, p, tiles, blocks, mask, bias, query, key, value, lse, rowTerm, outputGrad, queryGrad, sink);
    }
}

/// <summary>A forward launch waiting for its mask and bias structs (see <see cref="BlockSparseDispatch"/>).</summary>
internal sealed class BlockSparseForwardPass<T, TS>(
    ComputeDevice device, AcceleratorStream stream, BlockSparseParams p, BlockSparseTiles tiles, BlockList blocks,
    ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<T> output, ArrayView<float> lse) : IBlockSparsePass
    where T : unmanaged
    where TS : struct, IElementStorage<T>
{
    public void Run<TMask, TBias>(TMask mask, TBias bias)
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
        => BlockSparseLauncher.Forward<T, TS, TMask, TBias>(device, stream, p, tiles, blocks, mask, bias, query, key, value, output, lse);
}

/// <summary>A backward launch waiting for its mask and bias structs.</summary>
internal sealed class BlockSparseBackwardPass<T, TS>(
    ComputeDevice device, AcceleratorStream stream, BlockSparseParams p, BlockSparseTiles tiles, BlockList blocks, BlockList transposed,
    ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<T> output, ArrayView<float> lse,
    ArrayView<T> outputGrad, ArrayView<T> queryGrad, ArrayView<T> keyGrad, ArrayView<T> valueGrad, BiasGradientTarget biasGradient = default) : IBlockSparsePass
    where T : unmanaged
    where TS : struct, IElementStorage<T>
{
    public void Run<TMask, TBias>(TMask mask, TBias bias)
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
        => BlockSparseLauncher.Backward<T, TS, TMask, TBias>(
            device, stream, p, tiles, blocks, transposed, mask, bias, query, key, value, output, lse, outputGrad, queryGrad, keyGrad, valueGrad,
            biasGradient);
}
