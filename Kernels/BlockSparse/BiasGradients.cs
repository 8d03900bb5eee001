using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Runtime;

namespace Natten.Kernels.BlockSparse;

/// <summary>
/// Where the dQ kernel puts dS (= d(score) = d(bias) of the pair) when the caller wants the score bias's
/// gradient. Each query row is owned by one thread of the dQ kernel, which visits its pairs in list
/// order: every sink below has exactly one writer per element, so the result is deterministic.
/// <see cref="NoBiasGradient"/> folds away (the path without a bias gradient is unchanged).
/// </summary>
internal interface IBiasGradientSink
{
    /// <param name="bias">The bias struct (its <see cref="IScoreBias.IndexOf"/> names the parameter of the pair).</param>
    /// <param name="batch">Batch entry.</param>
    /// <param name="head">Query head.</param>
    /// <param name="query">Query token.</param>
    /// <param name="key">Key token.</param>
    /// <param name="entry">The key block's entry index in the forward block list.</param>
    /// <param name="row">The query row <c>(b · Nq + q) · H + h</c>.</param>
    /// <param name="ds">dS of the pair.</param>
    void Add<TBias>(TBias bias, int batch, int head, int query, int key, int entry, long row, float ds)
        where TBias : struct, IScoreBias;
}

/// <summary>No bias gradient wanted.</summary>
internal readonly struct NoBiasGradient : IBiasGradientSink
{
    public void Add<TBias>(TBias bias, int batch, int head, int query, int key, int entry, long row, float ds)
        where TBias : struct, IScoreBias
    {
    }
}

/// <summary>
/// A dense bias with one plane per (batch, head) of the problem (nothing broadcast): each (b, h, q, k) is its
/// own parameter, so dS goes straight to the zeroed gradient.
/// </summary>
internal readonly struct DirectBiasGradient : IBiasGradientSink
{
    private readonly ArrayView<float> _gradient;

    public DirectBiasGradient(ArrayView<float> gradient) => _gradient = gradient;

    public void Add<TBias>(TBias bias, int batch, int head, int query, int key, int entry, long row, float ds)
        where TBias : struct, IScoreBias
    {
        var index = bias.IndexOf(batch, head, query, key);
        if (index >= 0)
        {
            _gradient[index] = ds;
        }
    }
}

/// <summary>
/// dS of the listed blocks in the block-sparse layout, for a dense bias broadcast over batch and/or heads
/// (summed afterwards by <see cref="BiasGradientKernels.ReduceDense"/>). Layout
/// <c>[replicas, entries, Bq, Bk]</c>: <c>entries</c> is the mask's total block count (all planes) and a
/// replica is one of the (batch, head) pairs that share a mask plane, so the workspace holds
/// <c>B · H · (listed blocks per (b, h), averaged) · Bq · Bk</c> floats.
/// </summary>
internal readonly struct PairBiasGradient : IBiasGradientSink
{
    private readonly ArrayView<float> _workspace;
    private readonly BlockSparseParams _p;
    private readonly int _entries;

    public PairBiasGradient(ArrayView<float> workspace, BlockSparseParams p, int entries)
        => (_workspace, _p, _entries) = (workspace, p, entries);

    /// <summary>How many (batch, head) pairs share one mask plane.</summary>
    public static int Replicas(BlockSparseParams p) => (p.MaskBatches == 1 ? p.Batch : 1) * (p.MaskHeads == 1 ? p.Heads : 1);

    /// <summary>Which of the (batch, head) pairs sharing its mask plane this one is.</summary>
    public static int Replica(BlockSparseParams p, int batch, int head)
        => ((p.MaskBatches == 1 ? batch : 0) * (p.MaskHeads == 1 ? p.Heads : 1)) + (p.MaskHeads == 1 ? head : 0);

    /// <summary>Workspace index of pair (query, key) of entry <paramref name="entry"/> for (batch, head).</summary>
    public static long Index(BlockSparseParams p, int entries, int batch, int head, int entry, int query, int key)
        => ((((((long)Replica(p, batch, head) * entries) + entry) * p.QueryBlock) + (query % p.QueryBlock)) * p.KeyBlock) + (key % p.KeyBlock);

    public void Add<TBias>(TBias bias, int batch, int head, int query, int key, int entry, long row, float ds)
        where TBias : struct, IScoreBias
        => _workspace[Index(_p, _entries, batch, head, entry, query, key)] = ds;
}

/// <summary>
/// Per-query-row partial sums for a table bias (RPB): <c>[B · Nq · H, W]</c> with W the table's entries per
/// head; the row's owning thread adds its pairs in list order. <see cref="BiasGradientKernels.ReduceTable"/>
/// sums the rows per table entry.
/// </summary>
internal readonly struct RowTableBiasGradient : IBiasGradientSink
{
    private readonly ArrayView<float> _partials;
    private readonly int _width;

    public RowTableBiasGradient(ArrayView<float> partials, int width) => (_partials, _width) = (partials, width);

    public void Add<TBias>(TBias bias, int batch, int head, int query, int key, int entry, long row, float ds)
        where TBias : struct, IScoreBias
    {
        var index = bias.IndexOf(batch, head, query, key);
        if (index >= 0)
        {
            var slot = (row * _width) + (index % _width);
            _partials[slot] += ds;
        }
    }
}

/// <summary>The fixed-order reductions that turn the dQ kernel's dS into the bias gradient.</summary>
internal static class BiasGradientKernels
{
    /// <summary>
    /// Dense bias <c>[biasBatches, biasHeads, Nq, Nk]</c> broadcast over batch and/or heads: one thread per
    /// gradient element sums, batch-major then head, dS of every (b, h) that reads it from the block-sparse
    /// workspace (0 where the key block is not listed).
    /// </summary>
    public static void ReduceDense(
        Index1D index, long count, int stride, BlockSparseParams p, BlockList blocks, ArrayView<float> workspace,
        ArrayView<float> gradient, int biasBatches, int biasHeads, int entries)
    {
        var planeSize = (long)p.QueryTokens * p.KeyTokens;
        for (long i = index.X; i < count; i += stride)
        {
            var key = (int)(i % p.KeyTokens);
            var query = (int)(i / p.KeyTokens % p.QueryTokens);
            var plane = (int)(i / planeSize);
            var biasHead = plane % biasHeads;
            var biasBatch = plane / biasHeads;
            var queryBlock = query / p.QueryBlock;
            var keyBlock = key / p.KeyBlock;
            var (b0, b1) = biasBatches == 1 ? (0, p.Batch) : (biasBatch, biasBatch + 1);
            var (h0, h1) = biasHeads == 1 ? (0, p.Heads) : (biasHead, biasHead + 1);
            var sum = 0f;
            for (var b = b0; b < b1; b++)
            {
                for (var h = h0; h < h1; h++)
                {
                    var entry = Find(blocks, p.ForwardRow(b, h, queryBlock), keyBlock);
                    if (entry >= 0)
                    {
                        sum += workspace[PairBiasGradient.Index(p, entries, b, h, entry, query, key)];
                    }
                }
            }

            gradient[i] = sum;
        }
    }

    /// <summary>
    /// Table bias <c>[tableHeads, W]</c>: one thread per table entry sums the per-row partials in row order
    /// (batch, query, head), over every head when the table is shared by the heads.
    /// </summary>
    public static void ReduceTable(
        Index1D index, long count, int stride, BlockSparseParams p, ArrayView<float> partials, ArrayView<float> gradient, int tableHeads, int width)
    {
        for (long i = index.X; i < count; i += stride)
        {
            var slot = (int)(i % width);
            var tableHead = (int)(i / width);
            var (h0, h1) = tableHeads == 1 ? (0, p.Heads) : (tableHead, tableHead + 1);
            var sum = 0f;
            for (var b = 0; b < p.Batch; b++)
            {
                for (var q = 0; q < p.QueryTokens; q++)
                {
                    for (var h = h0; h < h1; h++)
                    {
                        var row = ((((long)b * p.QueryTokens) + q) * p.Heads) + h;
                        sum += partials[(row * width) + slot];
                    }
                }
            }

            gradient[i] = sum;
        }
    }

    /// <summary>The entry index of <paramref name="keyBlock"/> in list row <paramref name="row"/> (sorted by block), or −1.</summary>
    private static int Find(BlockList blocks, int row, int keyBlock)
    {
        var lo = blocks.Offsets[row];
        var hi = blocks.Offsets[row + 1] - 1;
        while (lo <= hi)
        {
            var mid = lo + ((hi - lo) / 2);
            var block = BlockList.Block(blocks.Entries[mid]);
            if (block == keyBlock)
            {
                return mid;
            }

            if (block < keyBlock)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }

        return -1;
    }
}

/// <summary>How the caller's bias gradient is produced (chosen on the host from the bias's kind and broadcast).</summary>
internal enum BiasGradientKind
{
    /// <summary>No bias gradient.</summary>
    None,

    /// <summary>Dense, not broadcast: dS written straight to the gradient.</summary>
    Direct,

    /// <summary>Dense, broadcast over batch and/or heads: block-sparse dS workspace, then <see cref="BiasGradientKernels.ReduceDense"/>.</summary>
    Pairs,

    /// <summary>A table (RPB): per-row partials, then <see cref="BiasGradientKernels.ReduceTable"/>.</summary>
    Table,
}

/// <summary>The caller's bias gradient destination and what the launcher needs to fill it.</summary>
/// <param name="Kind">How it is produced.</param>
/// <param name="Gradient">The destination (the bias's length), overwritten.</param>
/// <param name="BiasBatches">Dense: batch planes of the bias (1 or B).</param>
/// <param name="BiasHeads">Dense: head planes (1 or H); table: head slices (1 or H).</param>
/// <param name="TableWidth">Table: entries per head slice.</param>
/// <param name="Entries">The mask's total listed blocks (all planes).</param>
internal readonly record struct BiasGradientTarget(
    BiasGradientKind Kind, ArrayView<float> Gradient, int BiasBatches, int BiasHeads, int TableWidth, int Entries)
{
    public static BiasGradientTarget None => default;

    /// <summary>Workspace floats the target needs besides the gradient itself (0 for none and direct).</summary>
    public long WorkspaceFloats(BlockSparseParams p) => Kind switch
    {
        BiasGradientKind.Pairs => (long)PairBiasGradient.Replicas(p) * Entries * p.QueryBlock * p.KeyBlock,
        BiasGradientKind.Table => p.QueryRows * TableWidth,
        _ => 0,
    };
}

/// <summary>A backward pass that hands dS to a bias-gradient sink of the type it is given (fused dQ kernel, naive scatter).</summary>
internal interface IBiasGradientProducer
{
    /// <summary>Runs the pass with <paramref name="sink"/> (enqueued on the stream; <see cref="BiasGradientRun"/> waits).</summary>
    void Produce<TSink>(TSink sink)
        where TSink : struct, IBiasGradientSink;
}

/// <summary>
/// The one host sequence of a bias gradient, whatever backend produces dS: zero the gradient (direct) or the
/// workspace (pairs, table), run the producer with the target's sink, then the fixed-order reduction
/// (<see cref="BiasGradientKernels"/>); waits for the stream, since the workspace is freed on return.
/// </summary>
internal static class BiasGradientRun
{
    public static void Execute<TProducer>(
        ComputeDevice device, AcceleratorStream stream, BlockSparseParams p, BlockList blocks, in BiasGradientTarget target, TProducer producer)
        where TProducer : IBiasGradientProducer
    {
        var gradient = target.Gradient;
        var reduce = device.Kernels(a => new BiasGradientReduceSet(a));
        using var workspace = device.Accelerator.Allocate1D<float>(Math.Max(1, target.WorkspaceFloats(p)));
        var extent = device.LaunchExtent(gradient.Length);
        switch (target.Kind)
        {
            case BiasGradientKind.Direct:
                gradient.MemSetToZero(stream);
                producer.Produce(new DirectBiasGradient(gradient));
                break;
            case BiasGradientKind.Pairs:
                workspace.View.MemSetToZero(stream);
                producer.Produce(new PairBiasGradient(workspace.View, p, target.Entries));
                reduce.ReduceDense(stream, extent, gradient.Length, extent, p, blocks, workspace.View, gradient, target.BiasBatches, target.BiasHeads, target.Entries);
                break;
            case BiasGradientKind.Table:
                workspace.View.MemSetToZero(stream);
                producer.Produce(new RowTableBiasGradient(workspace.View, target.TableWidth));
                reduce.ReduceTable(stream, extent, gradient.Length, extent, p, workspace.View, gradient, target.BiasHeads, target.TableWidth);
                break;
            default:
                throw new InvalidOperationException($"Unknown bias gradient kind {target.Kind}.");
        }

        stream.Synchronize();
    }
}
