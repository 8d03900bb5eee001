using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Common;
using Natten.Kernels.Runtime;

namespace Natten.Kernels.BlockSparse;

/// <summary>The naive block-sparse forward kernels for one storage type, mask and bias, compiled once per accelerator.</summary>
internal sealed class NaiveBlockSparseKernelSet<T, TS, TMask, TBias>
    where T : unmanaged
    where TS : struct, IElementStorage<T>
    where TMask : struct, IElementMask
    where TBias : struct, IScoreBias
{
    public NaiveBlockSparseKernelSet(Accelerator accelerator)
    {
        Scores = accelerator.LoadAutoGroupedKernel<Index1D, BlockSparseParams, long, int, int, BlockList, TMask, TBias, ArrayView<T>, ArrayView<T>, ArrayView<float>>(
            NaiveBlockSparseKernels.Scores<T, TS, TMask, TBias>);
        Softmax = accelerator.LoadAutoGroupedKernel<Index1D, BlockSparseParams, long, int, int, ArrayView<float>, ArrayView<float>, int>(
            NaiveBlockSparseKernels.Softmax);
        WeightedValues = accelerator.LoadAutoGroupedKernel<Index1D, BlockSparseParams, long, int, int, ArrayView<float>, ArrayView<T>, ArrayView<T>>(
            NaiveBlockSparseKernels.WeightedValues<T, TS>);
    }

    public Action<AcceleratorStream, Index1D, BlockSparseParams, long, int, int, BlockList, TMask, TBias, ArrayView<T>, ArrayView<T>, ArrayView<float>> Scores { get; }

    public Action<AcceleratorStream, Index1D, BlockSparseParams, long, int, int, ArrayView<float>, ArrayView<float>, int> Softmax { get; }

    public Action<AcceleratorStream, Index1D, BlockSparseParams, long, int, int, ArrayView<float>, ArrayView<T>, ArrayView<T>> WeightedValues { get; }
}

/// <summary>The naive block-sparse gradient kernels for one storage type, mask and bias, compiled once per accelerator.</summary>
internal sealed class NaiveBlockSparseBackwardKernelSet<T, TS, TMask, TBias>
    where T : unmanaged
    where TS : struct, IElementStorage<T>
    where TMask : struct, IElementMask
    where TBias : struct, IScoreBias
{
    public NaiveBlockSparseBackwardKernelSet(Accelerator accelerator)
    {
        RowTerm = accelerator.LoadAutoGroupedKernel<Index1D, BlockSparseParams, long, int, ArrayView<T>, ArrayView<T>, ArrayView<float>>(
            NaiveBlockSparseKernels.RowTerm<T, TS>);
        Matrices = accelerator.LoadAutoGroupedKernel<Index1D, BlockSparseParams, NaiveRange, BlockList, TMask, TBias, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<float>, ArrayView<float>>(
            NaiveBlockSparseKernels.ProbabilitiesAndScoreGrads<T, TS, TMask, TBias>);
        QueryGrad = accelerator.LoadAutoGroupedKernel<Index1D, BlockSparseParams, long, int, int, ArrayView<float>, ArrayView<T>, ArrayView<T>>(
            NaiveBlockSparseKernels.QueryGrad<T, TS>);
        KeyValueGrad = accelerator.LoadAutoGroupedKernel<Index1D, BlockSparseParams, long, int, int, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>>(
            NaiveBlockSparseKernels.KeyValueGrad<T, TS>);
    }

    public Action<AcceleratorStream, Index1D, BlockSparseParams, long, int, ArrayView<T>, ArrayView<T>, ArrayView<float>> RowTerm { get; }

    public Action<AcceleratorStream, Index1D, BlockSparseParams, NaiveRange, BlockList, TMask, TBias, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<float>, ArrayView<float>> Matrices { get; }

    public Action<AcceleratorStream, Index1D, BlockSparseParams, long, int, int, ArrayView<float>, ArrayView<T>, ArrayView<T>> QueryGrad { get; }

    public Action<AcceleratorStream, Index1D, BlockSparseParams, long, int, int, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>> KeyValueGrad { get; }
}

/// <summary>The naive scatter of dS into one bias-gradient sink type, compiled once per accelerator.</summary>
internal sealed class NaiveBiasGradientKernelSet<TBias, TSink>
    where TBias : struct, IScoreBias
    where TSink : struct, IBiasGradientSink
{
    public NaiveBiasGradientKernelSet(Accelerator accelerator)
        => Scatter = accelerator.LoadAutoGroupedKernel<Index1D, BlockSparseParams, NaiveRange, BlockList, TBias, ArrayView<float>, TSink>(
            NaiveBlockSparseKernels.ScatterBiasGradient<TBias, TSink>);

    public Action<AcceleratorStream, Index1D, BlockSparseParams, NaiveRange, BlockList, TBias, ArrayView<float>, TSink> Scatter { get; }
}

/// <summary>
/// Host side of the naive block-sparse forward and backward: the score workspace is one float per (query, key) pair
/// of every head of a chunk of batch entries, so its size is O(H · Nq · Nk) per batch entry whatever
/// the pattern. Launch-time code does no validation of its own (Bindings did it).
/// </summary>
internal static class NaiveBlockSparseLauncher
{
    /// <summary>Most bytes the score workspace of one launch sequence takes (more batch entries run in turn).</summary>
    public const long WorkspaceBudgetBytes = 1L << 30;

    /// <summary>Workspace bytes of one batch entry: every head's dense score matrix.</summary>
    public static long BatchWorkspaceBytes(BlockSparseParams p) => sizeof(float) * (long)p.Heads * p.QueryTokens * p.KeyTokens;

    /// <summary>Batch entries per launch sequence: as many as fit <paramref name="budget"/> bytes of workspace, at least one.</summary>
    public static int BatchesPerChunk(BlockSparseParams p, long budget)
        => (int)Math.Clamp(budget / Math.Max(1, BatchWorkspaceBytes(p)), 1, p.Batch);

    /// <summary>The workspace budget on a device with <paramref name="memory"/> bytes: a quarter of it, at most <paramref name="cap"/>.</summary>
    public static long Budget(long memory, long cap = WorkspaceBudgetBytes) => Math.Min(cap, memory / 4);

    /// <summary>Workspace bytes the forward allocates with <paramref name="budget"/>.</summary>
    public static long WorkspaceBytes(BlockSparseParams p, long budget) => BatchesPerChunk(p, budget) * BatchWorkspaceBytes(p);

    public static void Forward<T, TS, TMask, TBias>(
        ComputeDevice device, AcceleratorStream stream, BlockSparseParams p, long budget, BlockList blocks, TMask mask, TBias bias,
        ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<T> output, ArrayView<float> lse)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        var kernels = device.Kernels(a => new NaiveBlockSparseKernelSet<T, TS, TMask, TBias>(a));
        var chunk = BatchesPerChunk(p, budget);
        using var scores = device.Accelerator.Allocate1D<float>((long)chunk * p.Heads * p.QueryTokens * p.KeyTokens);
        var writeLse = lse.Length > 0 ? 1 : 0;
        for (var first = 0; first < p.Batch; first += chunk)
        {
            var batches = Math.Min(chunk, p.Batch - first);
            var rows = (long)batches * p.Heads * p.QueryTokens;
            var pairs = rows * p.KeyTokens;
            var extent = device.LaunchExtent(pairs);
            kernels.Scores(stream, extent, p, pairs, extent, first, blocks, mask, bias, query, key, scores.View);
            extent = device.LaunchExtent(rows);
            kernels.Softmax(stream, extent, p, rows, extent, first, scores.View, lse, writeLse);
            extent = device.LaunchExtent(rows * p.ValueDim);
            kernels.WeightedValues(stream, extent, p, rows * p.ValueDim, extent, first, scores.View, value, output);
        }

        stream.Synchronize();
    }

    /// <summary>
    /// The backward: the row term, then per chunk of batch entries P and dS into two <c>[batches, H, Nq, Nk]</c>
    /// workspaces (so a chunk holds half the forward's batch entries), dQ, and dK/dV summed over each KV
    /// head's query heads in a fixed order (deterministic). With a bias gradient, each chunk's dS also goes to the
    /// target's sink (<see cref="NaiveBlockSparseKernels.ScatterBiasGradient"/>) and <see cref="BiasGradientRun"/>
    /// reduces it like the fused backward's. Waits for the stream.
    /// </summary>
    public static void Backward<T, TS, TMask, TBias>(
        ComputeDevice device, AcceleratorStream stream, BlockSparseParams p, long budget, BlockList blocks, TMask mask, TBias bias,
        ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<T> output, ArrayView<float> lse, ArrayView<T> outputGrad,
        ArrayView<T> queryGrad, ArrayView<T> keyGrad, ArrayView<T> valueGrad, BiasGradientTarget biasGradient = default)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        var pass = new BackwardProducer<T, TS, TMask, TBias>(
            device, stream, p, budget, blocks, mask, bias, query, key, value, output, lse, outputGrad, queryGrad, keyGrad, valueGrad);
        if (biasGradient.Kind == BiasGradientKind.None)
        {
            pass.Produce(default(NoBiasGradient));
        }
        else
        {
            BiasGradientRun.Execute(device, stream, p, blocks, biasGradient, pass);
        }
    }

    /// <summary>The naive backward's launch sequence, scattering dS into the sink it is given (none for <see cref="NoBiasGradient"/>).</summary>
    private readonly struct BackwardProducer<T, TS, TMask, TBias>(
        ComputeDevice device, AcceleratorStream stream, BlockSparseParams p, long budget, BlockList blocks, TMask mask, TBias bias,
        ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<T> output, ArrayView<float> lse, ArrayView<T> outputGrad,
        ArrayView<T> queryGrad, ArrayView<T> keyGrad, ArrayView<T> valueGrad) : IBiasGradientProducer
        where T : unmanaged
        where TS : struct, IElementStorage<T>
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        public void Produce<TSink>(TSink sink)
            where TSink : struct, IBiasGradientSink
        {
            var kernels = device.Kernels(a => new NaiveBlockSparseBackwardKernelSet<T, TS, TMask, TBias>(a));
            var scatter = typeof(TSink) == typeof(NoBiasGradient) ? null : device.Kernels(a => new NaiveBiasGradientKernelSet<TBias, TSink>(a));
            var chunk = BatchesPerChunk(p, budget / 2);
            var pairsPerChunk = (long)chunk * p.Heads * p.QueryTokens * p.KeyTokens;
            using var probabilities = device.Accelerator.Allocate1D<float>(pairsPerChunk);
            using var scoreGrads = device.Accelerator.Allocate1D<float>(pairsPerChunk);
            using var rowTerm = device.Accelerator.Allocate1D<float>(p.QueryRows);
            var extent = device.LaunchExtent(p.QueryRows);
            kernels.RowTerm(stream, extent, p, p.QueryRows, extent, output, outputGrad, rowTerm.View);
            var channels = Math.Max(p.HeadDim, p.ValueDim);
            for (var first = 0; first < p.Batch; first += chunk)
            {
                var batches = Math.Min(chunk, p.Batch - first);
                var rows = (long)batches * p.Heads * p.QueryTokens;
                var pairs = rows * p.KeyTokens;
                extent = device.LaunchExtent(pairs);
                kernels.Matrices(
                    stream, extent, p, new NaiveRange(pairs, extent, first), blocks, mask, bias, query, key, value, lse, rowTerm.View, outputGrad,
                    probabilities.View, scoreGrads.View);
                if (scatter is not null)
                {
                    extent = device.LaunchExtent(rows);
                    scatter.Scatter(stream, extent, p, new NaiveRange(rows, extent, first), blocks, bias, scoreGrads.View, sink);
                }

                extent = device.LaunchExtent(rows * p.HeadDim);
                kernels.QueryGrad(stream, extent, p, rows * p.HeadDim, extent, first, scoreGrads.View, key, queryGrad);
                var keyItems = (long)batches * p.KeyTokens * p.KvHeads * channels;
                extent = device.LaunchExtent(keyItems);
                kernels.KeyValueGrad(stream, extent, p, keyItems, extent, first, probabilities.View, scoreGrads.View, query, outputGrad, keyGrad, valueGrad);
            }

            // The workspaces are freed on return: wait for the kernels that use them.
            stream.Synchronize();
        }
    }
}

/// <summary>A naive backward launch waiting for its mask and bias structs.</summary>
internal sealed class NaiveBlockSparseBackwardPass<T, TS>(
    ComputeDevice device, AcceleratorStream stream, BlockSparseParams p, long budget, BlockList blocks,
    ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<T> output, ArrayView<float> lse, ArrayView<T> outputGrad,
    ArrayView<T> queryGrad, ArrayView<T> keyGrad, ArrayView<T> valueGrad, BiasGradientTarget biasGradient = default) : IBlockSparsePass
    where T : unmanaged
    where TS : struct, IElementStorage<T>
{
    public void Run<TMask, TBias>(TMask mask, TBias bias)
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
        => NaiveBlockSparseLauncher.Backward<T, TS, TMask, TBias>(
            device, stream, p, budget, blocks, mask, bias, query, key, value, output, lse, outputGrad, queryGrad, keyGrad, valueGrad, biasGradient);
}

/// <summary>A naive forward launch waiting for its mask and bias structs (see <see cref="BlockSparseDispatch"/>).</summary>
internal sealed class NaiveBlockSparseForwardPass<T, TS>(
    ComputeDevice device, AcceleratorStream stream, BlockSparseParams p, long budget, BlockList blocks,
    ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<T> output, ArrayView<float> lse) : IBlockSparsePass
    where T : unmanaged
    where TS : struct, IElementStorage<T>
{
    public void Run<TMask, TBias>(TMask mask, TBias bias)
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
        => NaiveBlockSparseLauncher.Forward<T, TS, TMask, TBias>(device, stream, p, budget, blocks, mask, bias, query, key, value, output, lse);
}
