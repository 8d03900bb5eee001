using ILGPU;

namespace Natten.Kernels.BlockSparse;

/// <summary>
/// A validated block-sparse problem as the kernels see it (passed by value). Q is <c>[B, Nq, H, D]</c>,
/// K/V are <c>[B, Nk, Hkv, D | Dv]</c>; the sequences are cut into query blocks of <see cref="QueryBlock"/>
/// and key blocks of <see cref="KeyBlock"/> tokens (the last ones may be shorter). The block lists
/// are per (mask batch, mask head); a mask shared by every batch entry or head has one of them.
/// </summary>
internal readonly struct BlockSparseParams
{
    public readonly int Batch;
    public readonly int Heads;
    public readonly int KvHeads;
    public readonly int HeadDim;
    public readonly int ValueDim;
    public readonly int QueryTokens;
    public readonly int KeyTokens;
    public readonly int QueryBlock;
    public readonly int KeyBlock;
    public readonly int QueryBlocks;
    public readonly int KeyBlocks;
    public readonly int MaskBatches;
    public readonly int MaskHeads;
    public readonly float Scale;

    public BlockSparseParams(
        int batch, int heads, int kvHeads, int headDim, int valueDim, int queryTokens, int keyTokens,
        int queryBlock, int keyBlock, int maskBatches, int maskHeads, double scale)
    {
        (Batch, Heads, KvHeads, HeadDim, ValueDim) = (batch, heads, kvHeads, headDim, valueDim);
        (QueryTokens, KeyTokens, QueryBlock, KeyBlock) = (queryTokens, keyTokens, queryBlock, keyBlock);
        QueryBlocks = (queryTokens + queryBlock - 1) / queryBlock;
        KeyBlocks = (keyTokens + keyBlock - 1) / keyBlock;
        (MaskBatches, MaskHeads) = (maskBatches, maskHeads);
        Scale = (float)scale;
    }

    /// <summary>Query rows: B · Nq · H.</summary>
    public long QueryRows => (long)Batch * QueryTokens * Heads;

    public int KvHeadOf(int head) => head / (Heads / KvHeads);

    /// <summary>The (mask batch, mask head) plane of a (batch, query head).</summary>
    public int Plane(int batch, int head) => ((MaskBatches == 1 ? 0 : batch) * MaskHeads) + (MaskHeads == 1 ? 0 : head);

    /// <summary>Row of the key-block list of query block <paramref name="queryBlock"/>.</summary>
    public int ForwardRow(int batch, int head, int queryBlock) => (Plane(batch, head) * QueryBlocks) + queryBlock;

    /// <summary>Row of the query-block list (the transposed pattern) of key block <paramref name="keyBlock"/>.</summary>
    public int TransposedRow(int batch, int head, int keyBlock) => (Plane(batch, head) * KeyBlocks) + keyBlock;
}

/// <summary>
/// One compressed-row block list on the device: row r's entries are
/// <c>Entries[Offsets[r] .. Offsets[r + 1])</c>, each <c>(block &lt;&lt; 1) | partial</c>, sorted by block.
/// </summary>
internal readonly struct BlockList
{
    public readonly ArrayView<int> Offsets;
    public readonly ArrayView<int> Entries;

    public BlockList(ArrayView<int> offsets, ArrayView<int> entries) => (Offsets, Entries) = (offsets, entries);

    public static int Block(int entry) => entry >> 1;

    public static bool IsPartial(int entry) => (entry & 1) != 0;

    public static int Encode(int block, bool partial) => (block << 1) | (partial ? 1 : 0);
}
