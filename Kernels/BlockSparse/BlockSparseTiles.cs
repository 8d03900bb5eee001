namespace Natten.Kernels.BlockSparse;

/// <summary>
/// How the block-sparse kernels cut their work: the forward and dQ kernels run <see cref="Queries"/>
/// threads (one query each) per group and stage <see cref="Keys"/> keys at a time; the dK/dV kernel
/// runs <see cref="KeyThreads"/> threads (one key each) and stages <see cref="StagedQueries"/> queries at a
/// time. A query block larger than <see cref="Queries"/> is split over several groups (each walks the
/// block's list); a key block is staged in several sub-tiles.
/// </summary>
internal readonly struct BlockSparseTiles
{
    public readonly int Queries;
    public readonly int Keys;
    public readonly int KeyThreads;
    public readonly int StagedQueries;

    public BlockSparseTiles(int queries, int keys, int keyThreads, int stagedQueries)
        => (Queries, Keys, KeyThreads, StagedQueries) = (queries, keys, keyThreads, stagedQueries);

    /// <summary>
    /// Defaults sized for 48 KB of shared memory: 64 queries / 16 keys for head dims up to 64, half that
    /// above; never more than a block holds.
    /// </summary>
    public static BlockSparseTiles Default(int queryBlock, int keyBlock, int headDim, int valueDim)
    {
        var large = Math.Max(headDim, valueDim) > 64;
        var threads = large ? 32 : 64;
        var staged = large ? 8 : 16;
        return new BlockSparseTiles(
            Math.Min(threads, queryBlock), Math.Min(staged, keyBlock), Math.Min(threads, keyBlock), Math.Min(staged, queryBlock));
    }

    /// <summary>Groups per query block in the forward and dQ kernels.</summary>
    public int QueryGroupsPerBlock(int queryBlock) => (queryBlock + Queries - 1) / Queries;

    /// <summary>Groups per key block in the dK/dV kernel.</summary>
    public int KeyGroupsPerBlock(int keyBlock) => (keyBlock + KeyThreads - 1) / KeyThreads;

    /// <summary>Shared floats of the forward: Q and O rows (padded by one against bank conflicts), K and V sub-tiles.</summary>
    public int ForwardSharedFloats(int headDim, int valueDim)
        => (Queries * (headDim + 1)) + (Queries * (valueDim + 1)) + (Keys * (headDim + valueDim));

    /// <summary>Shared floats of the dQ kernel: Q, dQ and dO rows, K and V sub-tiles.</summary>
    public int QueryGradSharedFloats(int headDim, int valueDim)
        => (Queries * 2 * (headDim + 1)) + (Queries * (valueDim + 1)) + (Keys * (headDim + valueDim));

    /// <summary>Shared floats of the dK/dV kernel: K, dK, V, dV rows; staged Q, dO, LSE and row term.</summary>
    public int KeyValueGradSharedFloats(int headDim, int valueDim)
        => (KeyThreads * 2 * (headDim + 1)) + (KeyThreads * 2 * (valueDim + 1)) + (StagedQueries * (headDim + valueDim + 2));

    public override string ToString() => $"Q {Queries} / KV {Keys}; backward K {KeyThreads} / Q {StagedQueries}";
}
