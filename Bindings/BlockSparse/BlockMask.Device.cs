using ILGPU;
using ILGPU.Runtime;
using Natten.BlockSparse;
using Natten.Kernels.BlockSparse;
using Natten.Kernels.Runtime;

namespace Natten;

public sealed partial class BlockMask
{
    /// <summary>
    /// <see cref="Create"/> on an accelerator: the element predicate (its kernel struct, the one the attention
    /// kernels evaluate in partial blocks) classifies every block on <paramref name="device"/> — empty, full or
    /// partial — and the compressed rows and the transposed rows are written there. The result is the same
    /// mask, entry for entry, as <see cref="Create"/> builds on the host, usable by every entry point.
    /// </summary>
    /// <remarks>
    /// <para>The lists stay on <paramref name="device"/> (the mask's copy there: no host→device copy on its first
    /// use); the only transfer during the build is the read-back of two totals. The host copy of the lists is
    /// made lazily, on the first host query (<see cref="GetKeyBlocks"/>, <see cref="GetQueryBlocks"/>,
    /// <see cref="Allows"/>, <see cref="AllowedPairs"/>, the reference backend), on the first use on another
    /// device, or by <see cref="Dispose"/> (which then frees the device lists; the mask stays usable).</para>
    /// <para>Every block is classified by evaluating the predicate over its pairs (stopping at the first block
    /// that is provably partial): O(Nq·Nk) predicate tests per (batch, head) list in the worst case, in parallel.
    /// The host path uses closed forms for some patterns (sliding window, grid window); the results are equal.</para>
    /// </remarks>
    /// <param name="device">The accelerator to build on (and keep the lists on).</param>
    /// <param name="elementMask">The pattern.</param>
    /// <param name="queryTokens">Nq (must match the mask's own length, if it has one).</param>
    /// <param name="keyTokens">Nk (likewise).</param>
    /// <param name="queryBlockSize">Bq.</param>
    /// <param name="keyBlockSize">Bk.</param>
    /// <returns>The block mask.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> or <paramref name="elementMask"/> is null.</exception>
    /// <exception cref="ArgumentException">A size is below 1 or disagrees with the element mask.</exception>
    public static BlockMask CreateOnDevice(
        AttentionDevice device, ElementMask elementMask, int queryTokens, int keyTokens, int queryBlockSize, int keyBlockSize)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(elementMask);
        ProblemValidator.CheckBlockMaskSizes(queryTokens, keyTokens, queryBlockSize, keyBlockSize, elementMask.Heads, elementMask.Batches);
        ProblemValidator.CheckElementMaskFits(elementMask, queryTokens, keyTokens, elementMask.Heads, elementMask.Batches);
        return BuildOnDevice(
            device.Compute, null, 1, 1, elementMask, queryTokens, keyTokens, queryBlockSize, keyBlockSize, elementMask.Heads, elementMask.Batches);
    }

    /// <summary>
    /// <see cref="FromBlocks"/> on an accelerator: the flags are copied to <paramref name="device"/>, and each
    /// flagged block is classified there against <paramref name="elementMask"/> (or listed full without one).
    /// The lists stay on the device as with <see cref="CreateOnDevice"/>.
    /// </summary>
    /// <param name="device">The accelerator to build on.</param>
    /// <param name="blocks">One flag per (batch, head, query block, key block), row-major.</param>
    /// <param name="queryTokens">Nq.</param>
    /// <param name="keyTokens">Nk.</param>
    /// <param name="queryBlockSize">Bq.</param>
    /// <param name="keyBlockSize">Bk.</param>
    /// <param name="heads">1 for flags shared by every head, else the number of query heads.</param>
    /// <param name="batches">1 for flags shared by every batch entry, else the batch size.</param>
    /// <param name="elementMask">Optional predicate inside the listed blocks.</param>
    /// <returns>The block mask.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    /// <exception cref="ArgumentException">A size is below 1, the flags' length is wrong, or the element mask does not fit.</exception>
    public static BlockMask FromBlocksOnDevice(
        AttentionDevice device, ReadOnlySpan<bool> blocks, int queryTokens, int keyTokens, int queryBlockSize, int keyBlockSize,
        int heads = 1, int batches = 1, ElementMask? elementMask = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        ProblemValidator.CheckBlockMaskSizes(queryTokens, keyTokens, queryBlockSize, keyBlockSize, heads, batches);
        var queryBlocks = (queryTokens + queryBlockSize - 1) / queryBlockSize;
        var keyBlocks = (keyTokens + keyBlockSize - 1) / keyBlockSize;
        ProblemValidator.CheckBlockFlags(blocks.Length, queryBlocks, keyBlocks, heads, batches);
        if (elementMask is not null)
        {
            ProblemValidator.CheckElementMaskFits(elementMask, queryTokens, keyTokens, heads, batches);
        }

        var flags = new byte[blocks.Length];
        for (var i = 0; i < flags.Length; i++)
        {
            flags[i] = blocks[i] ? (byte)1 : (byte)0;
        }

        return BuildOnDevice(
            device.Compute, flags, heads, batches, elementMask, queryTokens, keyTokens, queryBlockSize, keyBlockSize,
            Math.Max(heads, elementMask?.Heads ?? 1), Math.Max(batches, elementMask?.Batches ?? 1));
    }

    /// <summary>Whether the host copy of the lists exists (a mask built on a device makes it lazily).</summary>
    internal bool HasHostLists => _host.IsValueCreated;

    /// <summary>Classifies, counts, scans and fills on <paramref name="device"/>; the result owns the lists there.</summary>
    private static BlockMask BuildOnDevice(
        ComputeDevice device, byte[]? flags, int flagHeads, int flagBatches, ElementMask? elementMask,
        int queryTokens, int keyTokens, int queryBlockSize, int keyBlockSize, int heads, int batches)
    {
        var p = new BlockMaskBuildParams(
            queryTokens, keyTokens, queryBlockSize, keyBlockSize, batches, heads, flagBatches, flagHeads, elementMask is null);
        var stream = device.Accelerator.DefaultStream;
        using var flagBuffers = new DeviceBuffers();
        var flagView = flags is null ? ArrayView<byte>.Empty : flagBuffers.Upload<byte>(device, flags);
        var pass = new BlockMaskBuildPass(device, stream, p, flagView);
        (elementMask?.OnDevice(device) ?? BlockSparseDispatch.NoMask).Accept(pass);
        var built = pass.Result!;
        var buffers = new DeviceBuffers();
        var forward = new BlockList(buffers.Adopt(built.Offsets, p.Rows + 1), buffers.Adopt(built.Entries, built.BlockCount));
        var transposed = new BlockList(
            buffers.Adopt(built.TransposedOffsets, p.Columns + 1), buffers.Adopt(built.TransposedEntries, built.BlockCount));
        var kept = built.PartialBlockCount > 0 ? elementMask : null;
        var lists = new DeviceBlockMask(forward, transposed, kept?.OnDevice(device) ?? BlockSparseDispatch.NoMask, buffers);
        return new BlockMask(
            queryTokens, keyTokens, queryBlockSize, keyBlockSize, batches, heads, kept, built.BlockCount, built.PartialBlockCount, device, lists);
    }

    /// <summary>A mask whose lists live on <paramref name="device"/>; the host copy is downloaded on first need.</summary>
    private BlockMask(
        int queryTokens, int keyTokens, int queryBlockSize, int keyBlockSize, int batches, int heads, ElementMask? elementMask,
        int blockCount, int partialBlockCount, ComputeDevice device, DeviceBlockMask lists)
        : this(queryTokens, keyTokens, queryBlockSize, keyBlockSize, batches, heads, elementMask, blockCount, partialBlockCount)
    {
        _ = _devices.Get(device, _ => lists);
        _host = new Lazy<HostLists>(() => Download(lists), LazyThreadSafetyMode.ExecutionAndPublication);
    }

    private static HostLists Download(DeviceBlockMask lists)
    {
        static int[] Copy(ArrayView<int> view)
        {
            var data = new int[view.Length];
            if (data.Length > 0)
            {
                view.CopyToCPU(data);
            }

            return data;
        }

        return new HostLists(Copy(lists.Forward.Offsets), Copy(lists.Forward.Entries), Copy(lists.Transposed.Offsets), Copy(lists.Transposed.Entries));
    }
}
