using Natten.BlockSparse;
using Natten.Kernels.BlockSparse;
using Natten.Kernels.Runtime;

namespace Natten;

/// <summary>
/// A block-sparse attention pattern over flat token sequences of <see cref="QueryTokens"/> queries and
/// <see cref="KeyTokens"/> keys, cut into query blocks of <see cref="QueryBlockSize"/> and key blocks of
/// <see cref="KeyBlockSize"/> tokens (the last ones may be shorter). For each (batch entry, head, query
/// block) it lists, sorted and without duplicates, the key blocks to visit, each
/// <see cref="BlockKind.Full"/> (every pair allowed) or <see cref="BlockKind.Partial"/> (pairs filtered by
/// <see cref="ElementMask"/>) — FlexAttention's BlockMask. Unlisted blocks are skipped entirely.
/// </summary>
/// <remarks>
/// <para>Immutable and reusable: build it once on the host (from a dense or low-resolution boolean mask, an
/// <see cref="Natten.ElementMask"/>, explicit compressed rows, or a <see cref="BlockMasks"/> builder) and pass it to
/// any number of <see cref="BlockSparseAttention"/> calls. The transposed lists (for each key block, the
/// query blocks that list it — the backward's dK/dV order) are built with it. It copies itself to an
/// accelerator on first use there and keeps the copy; <see cref="Dispose"/> frees the copies. It can also be
/// built on an accelerator (<see cref="CreateOnDevice"/>, <see cref="FromBlocksOnDevice"/>): then its lists start
/// out on that device and the host copy is made when first needed.</para>
/// <para>A mask with <see cref="Batches"/> = 1 (or <see cref="Heads"/> = 1) is shared by every batch entry
/// (head). A query with no allowed key gets output 0 and LSE −∞.</para>
/// </remarks>
public sealed partial class BlockMask : IDisposable
{
    private readonly Lazy<HostLists> _host;
    private readonly DeviceCache<DeviceBlockMask> _devices = new();

    /// <summary>Takes validated compressed rows (entries encoded as <see cref="BlockList.Encode"/>).</summary>
    private BlockMask(
        int queryTokens, int keyTokens, int queryBlockSize, int keyBlockSize, int batches, int heads, int[] offsets, int[] entries,
        ElementMask? elementMask)
        : this(queryTokens, keyTokens, queryBlockSize, keyBlockSize, batches, heads, elementMask, entries.Length, entries.Count(BlockList.IsPartial))
    {
        var (transposedOffsets, transposedEntries) = Transpose(offsets, entries, batches * heads, QueryBlocks, KeyBlocks);
        var lists = new HostLists(offsets, entries, transposedOffsets, transposedEntries);
        _host = new Lazy<HostLists>(() => lists);
        _ = _host.Value;
    }

    /// <summary>The sizes and counts; the caller sets <see cref="_host"/>.</summary>
    private BlockMask(
        int queryTokens, int keyTokens, int queryBlockSize, int keyBlockSize, int batches, int heads, ElementMask? elementMask,
        int blockCount, int partialBlockCount)
    {
        (QueryTokens, KeyTokens, QueryBlockSize, KeyBlockSize) = (queryTokens, keyTokens, queryBlockSize, keyBlockSize);
        (Batches, Heads, ElementMask) = (batches, heads, elementMask);
        QueryBlocks = (queryTokens + queryBlockSize - 1) / queryBlockSize;
        KeyBlocks = (keyTokens + keyBlockSize - 1) / keyBlockSize;
        (BlockCount, PartialBlockCount) = (blockCount, partialBlockCount);
        _host = null!;
    }

    /// <summary>Query tokens (Nq).</summary>
    public int QueryTokens { get; }

    /// <summary>Key tokens (Nk).</summary>
    public int KeyTokens { get; }

    /// <summary>Query tokens per block (Bq).</summary>
    public int QueryBlockSize { get; }

    /// <summary>Key tokens per block (Bk).</summary>
    public int KeyBlockSize { get; }

    /// <summary>Query blocks: ⌈Nq / Bq⌉.</summary>
    public int QueryBlocks { get; }

    /// <summary>Key blocks: ⌈Nk / Bk⌉.</summary>
    public int KeyBlocks { get; }

    /// <summary>Batch entries with their own lists: 1 (shared) or the batch size.</summary>
    public int Batches { get; }

    /// <summary>Heads with their own lists: 1 (shared) or the number of query heads.</summary>
    public int Heads { get; }

    /// <summary>The predicate of partial blocks; null when every listed block is full.</summary>
    public ElementMask? ElementMask { get; }

    /// <summary>Listed blocks over all (batch, head) lists.</summary>
    public int BlockCount { get; }

    /// <summary>Listed blocks that are partial.</summary>
    public int PartialBlockCount { get; }

    /// <summary>Fraction of all blocks that are listed (1 = dense).</summary>
    public double BlockDensity => (double)BlockCount / ((long)Batches * Heads * QueryBlocks * KeyBlocks);

    /// <summary>The key blocks query block <paramref name="queryBlock"/> of (batch, head) visits, in order.</summary>
    /// <param name="batch">Batch entry (any value when <see cref="Batches"/> is 1).</param>
    /// <param name="head">Query head (any value when <see cref="Heads"/> is 1).</param>
    /// <param name="queryBlock">Query block index.</param>
    /// <returns>The listed key blocks.</returns>
    /// <exception cref="ArgumentOutOfRangeException">An index is out of range.</exception>
    public IReadOnlyList<MaskBlock> GetKeyBlocks(int batch, int head, int queryBlock)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(queryBlock);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(queryBlock, QueryBlocks);
        var host = _host.Value;
        return Decode(host.Offsets, host.Entries, (Plane(batch, head) * QueryBlocks) + queryBlock);
    }

    /// <summary>The query blocks that list key block <paramref name="keyBlock"/> for (batch, head), in order (the transposed pattern).</summary>
    /// <param name="batch">Batch entry (any value when <see cref="Batches"/> is 1).</param>
    /// <param name="head">Query head (any value when <see cref="Heads"/> is 1).</param>
    /// <param name="keyBlock">Key block index.</param>
    /// <returns>The query blocks and the kind of each listing.</returns>
    /// <exception cref="ArgumentOutOfRangeException">An index is out of range.</exception>
    public IReadOnlyList<MaskBlock> GetQueryBlocks(int batch, int head, int keyBlock)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(keyBlock);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(keyBlock, KeyBlocks);
        var host = _host.Value;
        return Decode(host.TransposedOffsets, host.TransposedEntries, (Plane(batch, head) * KeyBlocks) + keyBlock);
    }

    /// <summary>Whether query token <paramref name="query"/> of (batch, head) attends to key token <paramref name="key"/>.</summary>
    /// <param name="batch">Batch entry (any value when <see cref="Batches"/> is 1).</param>
    /// <param name="head">Query head (any value when <see cref="Heads"/> is 1).</param>
    /// <param name="query">Query token.</param>
    /// <param name="key">Key token.</param>
    /// <returns>True when the pair's block is listed and full, or partial and the element mask allows it.</returns>
    /// <exception cref="ArgumentOutOfRangeException">An index is out of range.</exception>
    public bool Allows(int batch, int head, int query, int key)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(query);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(query, QueryTokens);
        ArgumentOutOfRangeException.ThrowIfNegative(key);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(key, KeyTokens);
        var row = (Plane(batch, head) * QueryBlocks) + (query / QueryBlockSize);
        var host = _host.Value;
        var entries = host.Entries.AsSpan(host.Offsets[row], host.Offsets[row + 1] - host.Offsets[row]);
        var keyBlock = key / KeyBlockSize;
        var found = entries.BinarySearch(BlockList.Encode(keyBlock, false));
        if (found < 0)
        {
            found = ~found;
            if (found >= entries.Length || BlockList.Block(entries[found]) != keyBlock)
            {
                return false;
            }
        }

        return !BlockList.IsPartial(entries[found]) || ElementMask!.Allows(batch, head, query, key);
    }

    /// <summary>
    /// Allowed (query, key) pairs of one (batch, head): Σ over queries of the keys each sees — the
    /// <c>Σ|A(q)|</c> of the useful-FLOP count <c>2·(D + Dv)·Σ|A(q)|</c> per batch entry and head.
    /// </summary>
    /// <param name="batch">Batch entry (any value when <see cref="Batches"/> is 1).</param>
    /// <param name="head">Query head (any value when <see cref="Heads"/> is 1).</param>
    /// <returns>The number of allowed pairs.</returns>
    /// <exception cref="ArgumentOutOfRangeException">An index is out of range.</exception>
    public long AllowedPairs(int batch, int head)
    {
        var plane = Plane(batch, head);
        var (offsets, entries) = (_host.Value.Offsets, _host.Value.Entries);
        long pairs = 0;
        for (var qb = 0; qb < QueryBlocks; qb++)
        {
            var (q0, q1) = (qb * QueryBlockSize, Math.Min((qb + 1) * QueryBlockSize, QueryTokens));
            var row = (plane * QueryBlocks) + qb;
            for (var e = offsets[row]; e < offsets[row + 1]; e++)
            {
                var kb = BlockList.Block(entries[e]);
                var (k0, k1) = (kb * KeyBlockSize, Math.Min((kb + 1) * KeyBlockSize, KeyTokens));
                if (!BlockList.IsPartial(entries[e]))
                {
                    pairs += (long)(q1 - q0) * (k1 - k0);
                    continue;
                }

                for (var q = q0; q < q1; q++)
                {
                    for (var k = k0; k < k1; k++)
                    {
                        pairs += ElementMask!.Allows(batch, head, q, k) ? 1 : 0;
                    }
                }
            }
        }

        return pairs;
    }

    /// <summary>
    /// Frees the device copies of the block lists (the element mask's copies are its own: dispose it separately).
    /// A mask built on a device first copies its lists to the host (if no host query did already), so it stays usable.
    /// </summary>
    public void Dispose()
    {
        _ = _host.Value;
        _devices.Dispose();
    }

    /// <summary>A summary: <c>BlockMask 256x256, blocks 64x64, 1x8 lists, 40/128 blocks (12 partial)</c>.</summary>
    public override string ToString()
        => $"BlockMask {QueryTokens}x{KeyTokens}, blocks {QueryBlockSize}x{KeyBlockSize}, {Batches}x{Heads} lists, "
         + $"{BlockCount}/{(long)Batches * Heads * QueryBlocks * KeyBlocks} blocks ({PartialBlockCount} partial)";

    /// <summary>The block lists (and element mask) on <paramref name="device"/>, uploaded on first use.</summary>
    internal DeviceBlockMask OnDevice(ComputeDevice device) => _devices.Get(device, Upload);

    private int Plane(int batch, int head)
    {
        if (Batches > 1)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(batch);
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(batch, Batches);
        }

        if (Heads > 1)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(head);
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(head, Heads);
        }

        return ((Batches == 1 ? 0 : batch) * Heads) + (Heads == 1 ? 0 : head);
    }

    private static MaskBlock[] Decode(int[] offsets, int[] entries, int row)
    {
        var result = new MaskBlock[offsets[row + 1] - offsets[row]];
        for (var i = 0; i < result.Length; i++)
        {
            var entry = entries[offsets[row] + i];
            result[i] = new MaskBlock(BlockList.Block(entry), BlockList.IsPartial(entry) ? BlockKind.Partial : BlockKind.Full);
        }

        return result;
    }

    /// <summary>Counting sort of every plane's entries by key block: rows come out in query-block order, so each list is sorted.</summary>
    private static (int[] Offsets, int[] Entries) Transpose(int[] offsets, int[] entries, int planes, int queryBlocks, int keyBlocks)
    {
        var transposedOffsets = new int[(planes * keyBlocks) + 1];
        for (var plane = 0; plane < planes; plane++)
        {
            for (var e = offsets[plane * queryBlocks]; e < offsets[(plane + 1) * queryBlocks]; e++)
            {
                transposedOffsets[(plane * keyBlocks) + BlockList.Block(entries[e]) + 1]++;
            }
        }

        for (var r = 0; r < planes * keyBlocks; r++)
        {
            transposedOffsets[r + 1] += transposedOffsets[r];
        }

        var next = transposedOffsets[..^1];
        var transposed = new int[entries.Length];
        for (var plane = 0; plane < planes; plane++)
        {
            for (var qb = 0; qb < queryBlocks; qb++)
            {
                var row = (plane * queryBlocks) + qb;
                for (var e = offsets[row]; e < offsets[row + 1]; e++)
                {
                    var column = (plane * keyBlocks) + BlockList.Block(entries[e]);
                    transposed[next[column]++] = BlockList.Encode(qb, BlockList.IsPartial(entries[e]));
                }
            }
        }

        return (transposedOffsets, transposed);
    }

    private DeviceBlockMask Upload(ComputeDevice device)
    {
        var host = _host.Value;
        var buffers = new DeviceBuffers();
        var forward = new BlockList(buffers.Upload<int>(device, host.Offsets), buffers.Upload<int>(device, host.Entries));
        var transposed = new BlockList(buffers.Upload<int>(device, host.TransposedOffsets), buffers.Upload<int>(device, host.TransposedEntries));
        return new DeviceBlockMask(forward, transposed, ElementMask?.OnDevice(device) ?? BlockSparseDispatch.NoMask, buffers);
    }
}

/// <summary>A <see cref="BlockMask"/>'s compressed rows in host memory: forward and transposed offsets and entries.</summary>
internal sealed record HostLists(int[] Offsets, int[] Entries, int[] TransposedOffsets, int[] TransposedEntries);

/// <summary>A <see cref="BlockMask"/> on one device: both block lists and the element mask's struct.</summary>
internal sealed class DeviceBlockMask(BlockList forward, BlockList transposed, IMaskSource elementMask, DeviceBuffers buffers) : IDisposable
{
    public BlockList Forward => forward;

    public BlockList Transposed => transposed;

    public IMaskSource ElementMask => elementMask;

    public void Dispose() => buffers.Dispose();
}
