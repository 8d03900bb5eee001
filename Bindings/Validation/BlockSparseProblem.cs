using Natten.Kernels.BlockSparse;

namespace Natten.Validation;

/// <summary>
/// A validated block-sparse problem: shape, mask, scale and bias agree, and every tensor's element
/// count is known. Only <see cref="ProblemValidator.ValidateBlockSparse"/> creates one.
/// </summary>
internal sealed class BlockSparseProblem
{
    internal BlockSparseProblem(
        BlockSparseShape shape, BlockMask mask, double scale, ScoreBias? bias, ElementType elementType, BlockSparseTiling? tiling, bool biasGradient = false)
    {
        BiasGradient = biasGradient;
        Shape = shape;
        Mask = mask;
        Scale = scale;
        Bias = bias;
        ElementType = elementType;
        Tiling = tiling;
        var queryRows = checked((long)shape.Batch * shape.QueryTokens);
        var keyRows = checked((long)shape.Batch * shape.KeyTokens);
        QueryLength = checked(queryRows * shape.Heads * shape.HeadDim);
        KeyLength = checked(keyRows * shape.KvHeads * shape.HeadDim);
        ValueLength = checked(keyRows * shape.KvHeads * shape.ValueDim);
        OutputLength = checked(queryRows * shape.Heads * shape.ValueDim);
        LseLength = checked(queryRows * shape.Heads);
    }

    public BlockSparseShape Shape { get; }

    public BlockMask Mask { get; }

    public double Scale { get; }

    public ScoreBias? Bias { get; }

    public ElementType ElementType { get; }

    /// <summary>Whether the backward also returns the gradient of <see cref="Bias"/> (checked by <see cref="ProblemValidator.CheckBlockSparseBackwardLengths"/>).</summary>
    public bool BiasGradient { get; }

    public BlockSparseTiling? Tiling { get; }

    public long QueryLength { get; }

    public long KeyLength { get; }

    public long ValueLength { get; }

    public long OutputLength { get; }

    public long LseLength { get; }

    /// <summary>The problem as the kernels see it.</summary>
    public BlockSparseParams ToParams() => new(
        Shape.Batch, Shape.Heads, Shape.KvHeads, Shape.HeadDim, Shape.ValueDim, Shape.QueryTokens, Shape.KeyTokens,
        Mask.QueryBlockSize, Mask.KeyBlockSize, Mask.Batches, Mask.Heads, Scale);

    /// <summary>The requested work split, cut to the block sizes, or the defaults.</summary>
    public BlockSparseTiles Tiles()
    {
        var (bq, bk) = (Mask.QueryBlockSize, Mask.KeyBlockSize);
        if (Tiling is not { } t)
        {
            return BlockSparseTiles.Default(bq, bk, Shape.HeadDim, Shape.ValueDim);
        }

        return new BlockSparseTiles(
            Math.Min(t.Queries, bq), Math.Min(t.Keys, bk),
            Math.Min(t.KeyThreads == 0 ? t.Queries : t.KeyThreads, bk), Math.Min(t.StagedQueries == 0 ? t.Keys : t.StagedQueries, bq));
    }

    public override string ToString() => $"{Shape} {Mask} {ElementType}";
}
