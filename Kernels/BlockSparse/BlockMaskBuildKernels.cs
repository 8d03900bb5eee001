using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;
using ILGPU.Runtime;
using Natten.Kernels.Runtime;

namespace Natten.Kernels.BlockSparse;

/// <summary>
/// The sizes of a block mask built on the device: lists per (mask batch, mask head) plane, the sequences cut
/// into query blocks of <see cref="QueryBlock"/> and key blocks of <see cref="KeyBlock"/> tokens (the last
/// ones may be shorter), and optional low-resolution flags <c>[FlagBatches, FlagHeads, QB, KB]</c> that
/// broadcast over a count of 1.
/// </summary>
internal readonly struct BlockMaskBuildParams
{
    public readonly int QueryTokens;
    public readonly int KeyTokens;
    public readonly int QueryBlock;
    public readonly int KeyBlock;
    public readonly int QueryBlocks;
    public readonly int KeyBlocks;
    public readonly int Batches;
    public readonly int Heads;
    public readonly int FlagBatches;
    public readonly int FlagHeads;

    /// <summary>1 when a flagged block is full without evaluating a predicate (no element mask), else 0.</summary>
    public readonly int FullWithoutMask;

    public BlockMaskBuildParams(
        int queryTokens, int keyTokens, int queryBlock, int keyBlock, int batches, int heads, int flagBatches, int flagHeads, bool fullWithoutMask)
    {
        (QueryTokens, KeyTokens, QueryBlock, KeyBlock) = (queryTokens, keyTokens, queryBlock, keyBlock);
        QueryBlocks = (queryTokens + queryBlock - 1) / queryBlock;
        KeyBlocks = (keyTokens + keyBlock - 1) / keyBlock;
        (Batches, Heads, FlagBatches, FlagHeads) = (batches, heads, flagBatches, flagHeads);
        FullWithoutMask = fullWithoutMask ? 1 : 0;
    }

    /// <summary>Forward list rows: planes · QB.</summary>
    public long Rows => (long)Batches * Heads * QueryBlocks;

    /// <summary>Transposed list rows: planes · KB.</summary>
    public long Columns => (long)Batches * Heads * KeyBlocks;

    /// <summary>Block cells: planes · QB · KB.</summary>
    public long Cells => Rows * KeyBlocks;
}

/// <summary>
/// Block-mask construction on an accelerator, in three data-parallel steps whose result is, entry for entry,
/// what the host builds (<c>BlockMask.Create</c> / <c>FromBlocks</c>):
/// <list type="number">
/// <item><see cref="Classify{TMask}"/>: one thread per (plane, query block, key block) cell evaluates the element
/// predicate over the block's pairs (stopping at the first mixed evidence) and writes its kind
/// (0 empty, 1 full, 2 partial); cells the flags exclude are empty.</item>
/// <item><see cref="Count"/>: one thread per forward row (listed and partial blocks of a query block) and one per
/// transposed row (query blocks listing a key block); exclusive scans (ILGPU.Algorithms) turn the counts into
/// offsets, with the totals in the extra last element.</item>
/// <item><see cref="Fill"/>: one thread per forward row writes its key blocks in ascending order, one per
/// transposed row its query blocks in ascending order — sorted lists, no atomics, deterministic.</item>
/// </list>
/// </summary>
internal static class BlockMaskBuildKernels
{
    public const byte Empty = 0;
    public const byte Full = 1;
    public const byte Partial = 2;

    public static void Classify<TMask>(Index1D index, BlockMaskBuildParams p, TMask mask, ArrayView<byte> flags, int stride, ArrayView<byte> kinds)
        where TMask : struct, IElementMask
    {
        for (long cell = index.X; cell < p.Cells; cell += stride)
        {
            var kb = (int)(cell % p.KeyBlocks);
            var row = cell / p.KeyBlocks;
            var qb = (int)(row % p.QueryBlocks);
            var plane = (int)(row / p.QueryBlocks);
            var batch = plane / p.Heads;
            var head = plane % p.Heads;
            if (flags.Length > 0)
            {
                var flagPlane = ((p.FlagBatches == 1 ? 0 : batch) * p.FlagHeads) + (p.FlagHeads == 1 ? 0 : head);
                if (flags[((((long)flagPlane * p.QueryBlocks) + qb) * p.KeyBlocks) + kb] == 0)
                {
                    kinds[cell] = Empty;
                    continue;
                }
            }

            if (p.FullWithoutMask != 0)
            {
                kinds[cell] = Full;
                continue;
            }

            var q0 = qb * p.QueryBlock;
            var q1 = IntrinsicMath.Min(q0 + p.QueryBlock, p.QueryTokens);
            var k0 = kb * p.KeyBlock;
            var k1 = IntrinsicMath.Min(k0 + p.KeyBlock, p.KeyTokens);
            var any = false;
            var all = true;
            for (var q = q0; q < q1 && (all || !any); q++)
            {
                for (var k = k0; k < k1; k++)
                {
                    if (mask.Allows(batch, head, q, k))
                    {
                        any = true;
                    }
                    else
                    {
                        all = false;
                    }

                    if (any && !all)
                    {
                        break;
                    }
                }
            }

            kinds[cell] = !any ? Empty : all ? Full : Partial;
        }
    }

    /// <summary>Items [0, rows): listed and partial blocks of forward row r; items [rows, rows + columns): listed blocks of transposed row c.</summary>
    public static void Count(
        Index1D index, BlockMaskBuildParams p, ArrayView<byte> kinds, int stride,
        ArrayView<int> rowCounts, ArrayView<int> rowPartials, ArrayView<int> columnCounts)
    {
        var rows = p.Rows;
        var items = rows + p.Columns;
        for (long item = index.X; item < items; item += stride)
        {
            if (item < rows)
            {
                var count = 0;
                var partial = 0;
                for (var kb = 0; kb < p.KeyBlocks; kb++)
                {
                    var kind = kinds[(item * p.KeyBlocks) + kb];
                    count += kind != Empty ? 1 : 0;
                    partial += kind == Partial ? 1 : 0;
                }

                rowCounts[item] = count;
                rowPartials[item] = partial;
            }
            else
            {
                var column = item - rows;
                var plane = column / p.KeyBlocks;
                var kb = column % p.KeyBlocks;
                var count = 0;
                for (var qb = 0; qb < p.QueryBlocks; qb++)
                {
                    count += kinds[((((plane * p.QueryBlocks) + qb) * p.KeyBlocks) + kb)] != Empty ? 1 : 0;
                }

                columnCounts[column] = count;
            }
        }
    }

    /// <summary>Writes the forward rows' key blocks and the transposed rows' query blocks, each in ascending order, as <see cref="BlockList.Encode"/> entries.</summary>
    public static void Fill(
        Index1D index, BlockMaskBuildParams p, ArrayView<byte> kinds, int stride,
        ArrayView<int> offsets, ArrayView<int> entries, ArrayView<int> transposedOffsets, ArrayView<int> transposedEntries)
    {
        var rows = p.Rows;
        var items = rows + p.Columns;
        for (long item = index.X; item < items; item += stride)
        {
            if (item < rows)
            {
                var next = offsets[item];
                for (var kb = 0; kb < p.KeyBlocks; kb++)
                {
                    var kind = kinds[(item * p.KeyBlocks) + kb];
                    if (kind != Empty)
                    {
                        entries[next++] = BlockList.Encode(kb, kind == Partial);
                    }
                }
            }
            else
            {
                var column = item - rows;
                var plane = column / p.KeyBlocks;
                var kb = column % p.KeyBlocks;
                var next = transposedOffsets[column];
                for (var qb = 0; qb < p.QueryBlocks; qb++)
                {
                    var kind = kinds[(((plane * p.QueryBlocks) + qb) * p.KeyBlocks) + kb];
                    if (kind != Empty)
                    {
                        transposedEntries[next++] = BlockList.Encode(qb, kind == Partial);
                    }
                }
            }
        }
    }
}

/// <summary>The classification kernel for one mask struct, compiled once per accelerator.</summary>
internal sealed class BlockMaskClassifySet<TMask>
    where TMask : struct, IElementMask
{
    public BlockMaskClassifySet(Accelerator accelerator)
        => Classify = accelerator.LoadAutoGroupedKernel<Index1D, BlockMaskBuildParams, TMask, ArrayView<byte>, int, ArrayView<byte>>(
            BlockMaskBuildKernels.Classify<TMask>);

    public Action<AcceleratorStream, Index1D, BlockMaskBuildParams, TMask, ArrayView<byte>, int, ArrayView<byte>> Classify { get; }
}

/// <summary>The counting and filling kernels and the exclusive scan (independent of the pattern), compiled once per accelerator.</summary>
internal sealed class BlockMaskListSet
{
    public BlockMaskListSet(Accelerator accelerator)
    {
        Count = accelerator.LoadAutoGroupedKernel<Index1D, BlockMaskBuildParams, ArrayView<byte>, int, ArrayView<int>, ArrayView<int>, ArrayView<int>>(
            BlockMaskBuildKernels.Count);
        Fill = accelerator.LoadAutoGroupedKernel<Index1D, BlockMaskBuildParams, ArrayView<byte>, int, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>>(
            BlockMaskBuildKernels.Fill);
        Scan = accelerator.CreateScan<int, Stride1D.Dense, Stride1D.Dense, AddInt32>(ScanKind.Exclusive);
    }

    public Action<AcceleratorStream, Index1D, BlockMaskBuildParams, ArrayView<byte>, int, ArrayView<int>, ArrayView<int>, ArrayView<int>> Count { get; }

    public Action<AcceleratorStream, Index1D, BlockMaskBuildParams, ArrayView<byte>, int, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>> Fill { get; }

    public Scan<int, Stride1D.Dense, Stride1D.Dense> Scan { get; }
}

/// <summary>
/// A block mask's compressed rows built on a device: the forward lists (offsets <c>rows + 1</c>) and the
/// transposed lists (offsets <c>columns + 1</c>), owned by the caller from here on, plus the totals.
/// </summary>
internal sealed record DeviceBuiltLists(
    MemoryBuffer1D<int, Stride1D.Dense> Offsets, MemoryBuffer1D<int, Stride1D.Dense> Entries,
    MemoryBuffer1D<int, Stride1D.Dense> TransposedOffsets, MemoryBuffer1D<int, Stride1D.Dense> TransposedEntries,
    int BlockCount, int PartialBlockCount);

/// <summary>Host side of the block-mask build: allocations, the launches in order, and the one read-back of the totals.</summary>
internal static class BlockMaskBuilder
{
    /// <summary>
    /// Builds the lists of <paramref name="p"/> under <paramref name="mask"/> (and the optional flags) on
    /// <paramref name="device"/>. Waits for <paramref name="stream"/> twice: to read the two totals (the entry
    /// arrays' sizes), and before returning, since the temporary buffers are freed on return; the lists stay on the device.
    /// </summary>
    public static DeviceBuiltLists Build<TMask>(ComputeDevice device, AcceleratorStream stream, BlockMaskBuildParams p, TMask mask, ArrayView<byte> flags)
        where TMask : struct, IElementMask
    {
        var accelerator = device.Accelerator;
        var lists = device.Kernels(a => new BlockMaskListSet(a));
        var classify = device.Kernels(a => new BlockMaskClassifySet<TMask>(a));
        var (rows, columns) = (p.Rows, p.Columns);
        using var kinds = accelerator.Allocate1D<byte>(Math.Max(1, p.Cells));
        using var rowCounts = accelerator.Allocate1D<int>(rows + 1);
        using var rowPartials = accelerator.Allocate1D<int>(rows + 1);
        using var partialOffsets = accelerator.Allocate1D<int>(rows + 1);
        using var columnCounts = accelerator.Allocate1D<int>(columns + 1);
        using var temp = accelerator.Allocate1D<int>(accelerator.ComputeScanTempStorageSize<int>(Math.Max(rows, columns) + 1));
        var offsets = accelerator.Allocate1D<int>(rows + 1);
        var transposedOffsets = accelerator.Allocate1D<int>(columns + 1);
        MemoryBuffer1D<int, Stride1D.Dense>? entries = null, transposedEntries = null;
        try
        {
            // The extra last element of each count array is 0, so the exclusive scan ends with the total.
            rowCounts.MemSetToZero(stream);
            rowPartials.MemSetToZero(stream);
            columnCounts.MemSetToZero(stream);
            var cellExtent = device.LaunchExtent(p.Cells);
            classify.Classify(stream, cellExtent, p, mask, flags, cellExtent, kinds.View.SubView(0, p.Cells));
            var itemExtent = device.LaunchExtent(rows + columns);
            lists.Count(stream, itemExtent, p, kinds.View, itemExtent, rowCounts.View, rowPartials.View, columnCounts.View);
            lists.Scan(stream, rowCounts.View, offsets.View, temp.View);
            lists.Scan(stream, rowPartials.View, partialOffsets.View, temp.View);
            lists.Scan(stream, columnCounts.View, transposedOffsets.View, temp.View);
            var totals = new int[2];
            stream.Synchronize();
            ArrayView<int> offsetView = offsets.View, partialView = partialOffsets.View;
            offsetView.SubView(rows, 1).CopyToCPU(totals.AsSpan(0, 1));
            partialView.SubView(rows, 1).CopyToCPU(totals.AsSpan(1, 1));
            entries = accelerator.Allocate1D<int>(Math.Max(1, totals[0]));
            transposedEntries = accelerator.Allocate1D<int>(Math.Max(1, totals[0]));
            lists.Fill(stream, itemExtent, p, kinds.View, itemExtent, offsets.View, entries.View, transposedOffsets.View, transposedEntries.View);
            stream.Synchronize();
            return new DeviceBuiltLists(offsets, entries, transposedOffsets, transposedEntries, totals[0], totals[1]);
        }
        catch
        {
            offsets.Dispose();
            transposedOffsets.Dispose();
            entries?.Dispose();
            transposedEntries?.Dispose();
            throw;
        }
    }
}

/// <summary>A device build waiting for its mask struct (see <see cref="BlockSparseDispatch"/>).</summary>
internal sealed class BlockMaskBuildPass(ComputeDevice device, AcceleratorStream stream, BlockMaskBuildParams p, ArrayView<byte> flags) : IMaskVisitor
{
    public DeviceBuiltLists? Result { get; private set; }

    public void Visit<TMask>(TMask mask)
        where TMask : struct, IElementMask
        => Result = BlockMaskBuilder.Build(device, stream, p, mask, flags);
}
