using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Common;

namespace Natten.Kernels.BlockSparse;

/// <summary>The block-sparse forward for one storage type, mask and bias, compiled once per accelerator.</summary>
internal sealed class BlockSparseForwardKernelSet<T, TS, TMask, TBias>
    where T : unmanaged
    where TS : struct, IElementStorage<T>
    where TMask : struct, IElementMask
    where TBias : struct, IScoreBias
{
    public BlockSparseForwardKernelSet(Accelerator accelerator)
        => Forward = accelerator.LoadKernel<BlockSparseParams, BlockSparseTiles, BlockList, TMask, TBias, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, int>(
            BlockSparseForwardKernel.Forward<T, TS, TMask, TBias>);

    public Action<AcceleratorStream, KernelConfig, BlockSparseParams, BlockSparseTiles, BlockList, TMask, TBias, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, int> Forward { get; }
}

/// <summary>The block-sparse gradient kernels for one storage type, mask and bias, compiled once per accelerator.</summary>
internal sealed class BlockSparseBackwardKernelSet<T, TS, TMask, TBias>
    where T : unmanaged
    where TS : struct, IElementStorage<T>
    where TMask : struct, IElementMask
    where TBias : struct, IScoreBias
{
    public BlockSparseBackwardKernelSet(Accelerator accelerator)
    {
        QueryGrad = accelerator.LoadKernel<BlockSparseParams, BlockSparseTiles, BlockList, TMask, TBias, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>, NoBiasGradient>(
            BlockSparseBackwardKernels.QueryGrad<T, TS, TMask, TBias, NoBiasGradient>);
        KeyValueGrad = accelerator.LoadKernel<BlockSparseParams, BlockSparseTiles, BlockList, TMask, TBias, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>, ArrayView<T>>(
            BlockSparseBackwardKernels.KeyValueGrad<T, TS, TMask, TBias>);
    }

    public Action<AcceleratorStream, KernelConfig, BlockSparseParams, BlockSparseTiles, BlockList, TMask, TBias, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>, NoBiasGradient> QueryGrad { get; }

    public Action<AcceleratorStream, KernelConfig, BlockSparseParams, BlockSparseTiles, BlockList, TMask, TBias, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>, ArrayView<T>> KeyValueGrad { get; }
}

/// <summary>The row-term kernel for one storage type (independent of the pattern).</summary>
internal sealed class BlockSparseRowTermSet<T, TS>
    where T : unmanaged
    where TS : struct, IElementStorage<T>
{
    public BlockSparseRowTermSet(Accelerator accelerator)
        => RowTerm = accelerator.LoadAutoGroupedKernel<Index1D, int, long, int, ArrayView<T>, ArrayView<T>, ArrayView<float>>(
            BlockSparseBackwardKernels.RowTerm<T, TS>);

    public Action<AcceleratorStream, Index1D, int, long, int, ArrayView<T>, ArrayView<T>, ArrayView<float>> RowTerm { get; }
}

/// <summary>The dQ kernel that also hands dS to a bias-gradient sink, for one storage type, mask, bias and sink.</summary>
internal sealed class BlockSparseBiasGradKernelSet<T, TS, TMask, TBias, TGrad>
    where T : unmanaged
    where TS : struct, IElementStorage<T>
    where TMask : struct, IElementMask
    where TBias : struct, IScoreBias
    where TGrad : struct, IBiasGradientSink
{
    public BlockSparseBiasGradKernelSet(Accelerator accelerator)
        => QueryGrad = accelerator.LoadKernel<BlockSparseParams, BlockSparseTiles, BlockList, TMask, TBias, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>, TGrad>(
            BlockSparseBackwardKernels.QueryGrad<T, TS, TMask, TBias, TGrad>);

    public Action<AcceleratorStream, KernelConfig, BlockSparseParams, BlockSparseTiles, BlockList, TMask, TBias, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>, TGrad> QueryGrad { get; }
}

/// <summary>The fixed-order bias-gradient reductions (independent of storage type and pattern).</summary>
internal sealed class BiasGradientReduceSet
{
    public BiasGradientReduceSet(Accelerator accelerator)
    {
        ReduceDense = accelerator.LoadAutoGroupedKernel<Index1D, long, int, BlockSparseParams, BlockList, ArrayView<float>, ArrayView<float>, int, int, int>(
            BiasGradientKernels.ReduceDense);
        ReduceTable = accelerator.LoadAutoGroupedKernel<Index1D, long, int, BlockSparseParams, ArrayView<float>, ArrayView<float>, int, int>(
            BiasGradientKernels.ReduceTable);
    }

    public Action<AcceleratorStream, Index1D, long, int, BlockSparseParams, BlockList, ArrayView<float>, ArrayView<float>, int, int, int> ReduceDense { get; }

    public Action<AcceleratorStream, Index1D, long, int, BlockSparseParams, ArrayView<float>, ArrayView<float>, int, int> ReduceTable { get; }
}
