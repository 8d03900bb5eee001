namespace Natten.Tests.BlockSparse;

/// <summary>
/// A random block-sparse problem with a random dense mask built block by block: empty, full, dense-random
/// and sparse-random blocks, some queries with no key at all, odd block sizes (larger than the sequence
/// too), GQA, D ≠ Dv, per-head and per-batch masks, and sometimes a small tiling that splits blocks.
/// The mask is kept as a plain bool array: the tests' predicate does not go through <see cref="BlockMask"/>.
/// </summary>
internal sealed record RandomMaskCase(
    MaskedCase Data, bool[] Dense, int MaskBatches, int MaskHeads, int QueryBlock, int KeyBlock, BlockSparseTiling? Tiling)
{
    public BlockSparseShape Shape => Data.Shape;

    public BlockSparseOptions Options(string backend = "fused") => new() { Scale = Data.Scale, Backend = backend, Tiling = Tiling };

    public BlockMask Mask() => BlockMask.FromDense(Dense, Shape.QueryTokens, Shape.KeyTokens, QueryBlock, KeyBlock, MaskHeads, MaskBatches);

    public bool Allows(int b, int h, int q, int k)
    {
        var plane = ((MaskBatches == 1 ? 0 : b) * MaskHeads) + (MaskHeads == 1 ? 0 : h);
        return Dense[((((long)plane * Shape.QueryTokens) + q) * Shape.KeyTokens) + k];
    }

    public static RandomMaskCase Create(int seed, int maxTokens = 40)
    {
        var rng = new Random(seed);
        var batch = rng.Next(1, 3);
        var queryTokens = rng.Next(1, maxTokens + 1);
        var keyTokens = rng.Next(3) == 0 ? queryTokens : rng.Next(1, maxTokens + 1);
        int[] blockChoices = [1, 2, 3, 5, 8, 13, 16, 48];
        var queryBlock = blockChoices[rng.Next(blockChoices.Length)];
        var keyBlock = blockChoices[rng.Next(blockChoices.Length)];
        var kvHeads = rng.Next(1, 3);
        var heads = kvHeads * rng.Next(1, 3);
        int[] dims = [1, 3, 8, 16];
        var headDim = dims[rng.Next(dims.Length)];
        var valueDim = rng.Next(2) == 0 ? headDim : dims[rng.Next(dims.Length)];
        var shape = new BlockSparseShape(batch, queryTokens, keyTokens, heads, headDim) { KvHeads = kvHeads, ValueDim = valueDim };
        var maskHeads = rng.Next(2) == 0 ? 1 : heads;
        var maskBatches = rng.Next(3) == 0 ? batch : 1;
        var dense = new bool[(long)maskBatches * maskHeads * queryTokens * keyTokens];
        for (var plane = 0; plane < maskBatches * maskHeads; plane++)
        {
            for (var q0 = 0; q0 < queryTokens; q0 += queryBlock)
            {
                for (var k0 = 0; k0 < keyTokens; k0 += keyBlock)
                {
                    var kind = rng.Next(4); // 0 empty, 1 full, 2 half the pairs, 3 a tenth of the pairs
                    for (var q = q0; q < Math.Min(q0 + queryBlock, queryTokens); q++)
                    {
                        for (var k = k0; k < Math.Min(k0 + keyBlock, keyTokens); k++)
                        {
                            dense[((((long)plane * queryTokens) + q) * keyTokens) + k] = kind switch
                            {
                                1 => true,
                                2 => rng.Next(2) == 0,
                                3 => rng.Next(10) == 0,
                                _ => false,
                            };
                        }
                    }
                }
            }

            // Some queries see nothing at all: output 0, LSE −∞.
            for (var q = 0; q < queryTokens; q++)
            {
                if (rng.Next(8) == 0)
                {
                    Array.Fill(dense, false, (int)(((long)plane * queryTokens + q) * keyTokens), keyTokens);
                }
            }
        }

        BlockSparseTiling? tiling = rng.Next(3) == 0 ? new BlockSparseTiling(rng.Next(1, 6), rng.Next(1, 5), rng.Next(0, 5), rng.Next(0, 4)) : null;
        var scale = rng.Next(3) == 0 ? 0.2 + rng.NextDouble() : (double?)null;
        return new RandomMaskCase(MaskedCase.Create(rng, shape, scale), dense, maskBatches, maskHeads, queryBlock, keyBlock, tiling);
    }

    public override string ToString()
        => $"{Shape} mask {MaskBatches}x{MaskHeads} blocks {QueryBlock}x{KeyBlock} tiling {Tiling?.ToString() ?? "default"} scale {Data.Scale}";
}
