using Natten.Kernels.BlockSparse;

namespace Natten;

public sealed partial class BlockMask
{
    /// <summary>
    /// The block mask of an element predicate: every block with at least one allowed pair is listed, full
    /// when all of its pairs are allowed, else partial. The lists are per (batch, head) exactly when the
    /// predicate distinguishes them (<see cref="ElementMask.Batches"/>, <see cref="ElementMask.Heads"/>).
    /// </summary>
    /// <param name="elementMask">The pattern.</param>
    /// <param name="queryTokens">Nq (must match the mask's own length, if it has one).</param>
    /// <param name="keyTokens">Nk (likewise).</param>
    /// <param name="queryBlockSize">Bq.</param>
    /// <param name="keyBlockSize">Bk.</param>
    /// <returns>The block mask.</returns>
    /// <exception cref="ArgumentException">A size is below 1 or disagrees with the element mask.</exception>
    public static BlockMask Create(ElementMask elementMask, int queryTokens, int keyTokens, int queryBlockSize, int keyBlockSize)
    {
        ArgumentNullException.ThrowIfNull(elementMask);
        ProblemValidator.CheckBlockMaskSizes(queryTokens, keyTokens, queryBlockSize, keyBlockSize, elementMask.Heads, elementMask.Batches);
        ProblemValidator.CheckElementMaskFits(elementMask, queryTokens, keyTokens, elementMask.Heads, elementMask.Batches);
        return Classify(null, elementMask, queryTokens, keyTokens, queryBlockSize, keyBlockSize, elementMask.Heads, elementMask.Batches);
    }

    /// <summary>
    /// The block mask of a dense boolean mask <c>[batches, heads, Nq, Nk]</c> (true = attend): blocks
    /// with no true entry are skipped, all-true blocks are full, the rest partial (evaluated against the
    /// mask's bits on the device).
    /// </summary>
    /// <param name="mask">The dense mask, row-major.</param>
    /// <param name="queryTokens">Nq.</param>
    /// <param name="keyTokens">Nk.</param>
    /// <param name="queryBlockSize">Bq.</param>
    /// <param name="keyBlockSize">Bk.</param>
    /// <param name="heads">1 for a mask shared by every head, else the number of query heads.</param>
    /// <param name="batches">1 for a mask shared by every batch entry, else the batch size.</param>
    /// <returns>The block mask.</returns>
    /// <exception cref="ArgumentException">A size is below 1 or the mask's length is not <c>batches·heads·Nq·Nk</c>.</exception>
    public static BlockMask FromDense(
        ReadOnlySpan<bool> mask, int queryTokens, int keyTokens, int queryBlockSize, int keyBlockSize, int heads = 1, int batches = 1)
    {
        ProblemValidator.CheckBlockMaskSizes(queryTokens, keyTokens, queryBlockSize, keyBlockSize, heads, batches);
        return Create(ElementMask.Dense(mask, queryTokens, keyTokens, heads, batches), queryTokens, keyTokens, queryBlockSize, keyBlockSize);
    }

    /// <summary>
    /// The block mask of a low-resolution boolean mask <c>[batches, heads, ⌈Nq/Bq⌉, ⌈Nk/Bk⌉]</c>: true
    /// blocks are listed. Without <paramref name="elementMask"/> they are full; with one, each listed block
    /// is classified against it (full, partial, or dropped when it allows no pair).
    /// </summary>
    /// <param name="blocks">One flag per (batch, head, query block, key block), row-major.</param>
    /// <param name="queryTokens">Nq.</param>
    /// <param name="keyTokens">Nk.</param>
    /// <param name="queryBlockSize">Bq.</param>
    /// <param name="keyBlockSize">Bk.</param>
    /// <param name="heads">1 for flags shared by every head, else the number of query heads.</param>
    /// <param name="batches">1 for flags shared by every batch entry, else the batch size.</param>
    /// <param name="elementMask">Optional predicate inside the listed blocks.</param>
    /// <returns>The block mask.</returns>
    /// <exception cref="ArgumentException">A size is below 1, the flags' length is wrong, or the element mask does not fit.</exception>
    public static BlockMask FromBlocks(
        ReadOnlySpan<bool> blocks, int queryTokens, int keyTokens, int queryBlockSize, int keyBlockSize, int heads = 1, int batches = 1,
        ElementMask? elementMask = null)
    {
        ProblemValidator.CheckBlockMaskSizes(queryTokens, keyTokens, queryBlockSize, keyBlockSize, heads, batches);
        var queryBlocks = (queryTokens + queryBlockSize - 1) / queryBlockSize;
        var keyBlocks = (keyTokens + keyBlockSize - 1) / keyBlockSize;
        ProblemValidator.CheckBlockFlags(blocks.Length, queryBlocks, keyBlocks, heads, batches);
        if (elementMask is not null)
        {
            ProblemValidator.CheckElementMaskFits(elementMask, queryTokens, keyTokens, heads, batches);
        }

        var flags = new BlockFlags(blocks.ToArray(), heads, batches, queryBlocks, keyBlocks);
        return Classify(
            flags, elementMask, queryTokens, keyTokens, queryBlockSize, keyBlockSize,
            Math.Max(heads, elementMask?.Heads ?? 1), Math.Max(batches, elementMask?.Batches ?? 1));
    }

    /// <summary>
    /// A block mask from explicit compressed rows: for list row <c>r = (batch · heads + head) · ⌈Nq/Bq⌉ + queryBlock</c>,
    /// its key blocks are <c>keyBlocks[rowOffsets[r] .. rowOffsets[r + 1])</c>, strictly increasing, each of
    /// kind <c>kinds[i]</c>.
    /// </summary>
    /// <param name="rowOffsets"><c>batches · heads · ⌈Nq/Bq⌉ + 1</c> offsets, starting at 0, non-decreasing, ending at the number of entries.</param>
    /// <param name="keyBlocks">Key block indices in <c>[0, ⌈Nk/Bk⌉)</c>, sorted and without duplicates within a row.</param>
    /// <param name="kinds">The kind of each entry, or empty for all full.</param>
    /// <param name="queryTokens">Nq.</param>
    /// <param name="keyTokens">Nk.</param>
    /// <param name="queryBlockSize">Bq.</param>
    /// <param name="keyBlockSize">Bk.</param>
    /// <param name="heads">1 for lists shared by every head, else the number of query heads.</param>
    /// <param name="batches">1 for lists shared by every batch entry, else the batch size.</param>
    /// <param name="elementMask">The predicate of partial entries (required when there is one).</param>
    /// <returns>The block mask.</returns>
    /// <exception cref="ArgumentException">The rows break one of the rules above; the message names the row and entry.</exception>
    public static BlockMask FromCompressedRows(
        ReadOnlySpan<int> rowOffsets, ReadOnlySpan<int> keyBlocks, ReadOnlySpan<BlockKind> kinds,
        int queryTokens, int keyTokens, int queryBlockSize, int keyBlockSize, int heads = 1, int batches = 1, ElementMask? elementMask = null)
    {
        ProblemValidator.CheckBlockMaskSizes(queryTokens, keyTokens, queryBlockSize, keyBlockSize, heads, batches);
        var queryBlocks = (queryTokens + queryBlockSize - 1) / queryBlockSize;
        var keyBlockCount = (keyTokens + keyBlockSize - 1) / keyBlockSize;
        ProblemValidator.CheckCompressedRows(rowOffsets, keyBlocks, kinds, queryBlocks, keyBlockCount, heads, batches, elementMask is not null);
        if (elementMask is not null)
        {
            ProblemValidator.CheckElementMaskFits(elementMask, queryTokens, keyTokens, heads, batches);
        }

        var entries = new int[keyBlocks.Length];
        for (var i = 0; i < entries.Length; i++)
        {
            entries[i] = BlockList.Encode(keyBlocks[i], !kinds.IsEmpty && kinds[i] == BlockKind.Partial);
        }

        return new BlockMask(queryTokens, keyTokens, queryBlockSize, keyBlockSize, batches, heads, rowOffsets.ToArray(), entries, elementMask);
    }

    /// <summary>
    /// Lists every block the flags allow (all when there are none) that the element mask classifies as
    /// non-empty (every flagged block, full, when there is no element mask).
    /// </summary>
    private static BlockMask Classify(
        BlockFlags? flags, ElementMask? elementMask, int queryTokens, int keyTokens, int queryBlockSize, int keyBlockSize, int heads, int batches)
    {
        var queryBlocks = (queryTokens + queryBlockSize - 1) / queryBlockSize;
        var keyBlocks = (keyTokens + keyBlockSize - 1) / keyBlockSize;
        var offsets = new int[(batches * heads * queryBlocks) + 1];
        var entries = new List<int>();
        var anyPartial = false;
        for (var b = 0; b < batches; b++)
        {
            for (var h = 0; h < heads; h++)
            {
                for (var qb = 0; qb < queryBlocks; qb++)
                {
                    var (q0, q1) = (qb * queryBlockSize, Math.Min((qb + 1) * queryBlockSize, queryTokens));
                    for (var kb = 0; kb < keyBlocks; kb++)
                    {
                        if (flags is not null && !flags.Allows(b, h, qb, kb))
                        {
                            continue;
                        }

                        var kind = elementMask is null
                            ? BlockKind.Full
                            : elementMask.Classify(b, h, q0, q1, kb * keyBlockSize, Math.Min((kb + 1) * keyBlockSize, keyTokens));
                        if (kind is { } k)
                        {
                            entries.Add(BlockList.Encode(kb, k == BlockKind.Partial));
                            anyPartial |= k == BlockKind.Partial;
                        }
                    }

                    offsets[(((b * heads) + h) * queryBlocks) + qb + 1] = entries.Count;
                }
            }
        }

        return new BlockMask(
            queryTokens, keyTokens, queryBlockSize, keyBlockSize, batches, heads, offsets, [.. entries], anyPartial ? elementMask : null);
    }

    /// <summary>Low-resolution flags <c>[batches, heads, QB, KB]</c>, broadcast over a plane count of 1.</summary>
    private sealed class BlockFlags(bool[] flags, int heads, int batches, int queryBlocks, int keyBlocks)
    {
        public bool Allows(int batch, int head, int queryBlock, int keyBlock)
        {
            var plane = ((batches == 1 ? 0 : batch) * heads) + (heads == 1 ? 0 : head);
            return flags[(((long)plane * queryBlocks) + queryBlock) * keyBlocks + keyBlock];
        }
    }
}
