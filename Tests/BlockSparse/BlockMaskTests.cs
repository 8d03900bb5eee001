namespace Natten.Tests.BlockSparse;

/// <summary>The <see cref="BlockMask"/> type: construction paths, lists, the transposed lists, the predicate and validation.</summary>
public sealed class BlockMaskTests
{
    [Test]
    public void FromDenseClassifiesBlocksAndTransposes()
    {
        // 6 queries × 7 keys, blocks 3 × 3: block (0,0) full, (0,1) partial, (0,2) empty; (1,0) empty, (1,1) full, (1,2) partial (a single pair).
        var dense = new bool[6 * 7];
        void Set(int q, int k) => dense[(q * 7) + k] = true;
        for (var q = 0; q < 3; q++)
        {
            for (var k = 0; k < 3; k++)
            {
                Set(q, k);
                Set(q + 3, k + 3);
            }
        }

        Set(1, 4);
        Set(5, 6);
        using var mask = BlockMask.FromDense(dense, 6, 7, 3, 3);
        Assert.That(mask.GetKeyBlocks(0, 0, 0), Is.EqualTo(new[] { new MaskBlock(0, BlockKind.Full), new MaskBlock(1, BlockKind.Partial) }));
        Assert.That(mask.GetKeyBlocks(0, 0, 1), Is.EqualTo(new[] { new MaskBlock(1, BlockKind.Full), new MaskBlock(2, BlockKind.Partial) }));
        Assert.That(mask.GetQueryBlocks(0, 0, 1), Is.EqualTo(new[] { new MaskBlock(0, BlockKind.Partial), new MaskBlock(1, BlockKind.Full) }));
        Assert.That(mask.GetQueryBlocks(0, 0, 2), Is.EqualTo(new[] { new MaskBlock(1, BlockKind.Partial) }));
        Assert.That((mask.BlockCount, mask.PartialBlockCount, mask.QueryBlocks, mask.KeyBlocks), Is.EqualTo((4, 2, 2, 3)));
        Assert.That(mask.BlockDensity, Is.EqualTo(4 / 6.0));
        for (var q = 0; q < 6; q++)
        {
            for (var k = 0; k < 7; k++)
            {
                Assert.That(mask.Allows(0, 0, q, k), Is.EqualTo(dense[(q * 7) + k]), $"({q}, {k})");
            }
        }

        Assert.That(mask.AllowedPairs(0, 0), Is.EqualTo(dense.Count(x => x)));
    }

    [Test]
    public void TransposedListsAreTheInverseOfTheForwardLists()
    {
        var c = RandomMaskCase.Create(77);
        using var mask = c.Mask();
        for (var b = 0; b < mask.Batches; b++)
        {
            for (var h = 0; h < mask.Heads; h++)
            {
                var forward = Enumerable.Range(0, mask.QueryBlocks)
                    .SelectMany(qb => mask.GetKeyBlocks(b, h, qb).Select(e => (qb, kb: e.Index, e.Kind))).OrderBy(x => x).ToArray();
                var transposed = Enumerable.Range(0, mask.KeyBlocks)
                    .SelectMany(kb => mask.GetQueryBlocks(b, h, kb).Select(e => (qb: e.Index, kb, e.Kind))).OrderBy(x => x).ToArray();
                Assert.That(transposed, Is.EqualTo(forward));
                for (var kb = 0; kb < mask.KeyBlocks; kb++)
                {
                    Assert.That(mask.GetQueryBlocks(b, h, kb).Select(e => e.Index), Is.Ordered.Ascending.And.Unique);
                }
            }
        }
    }

    [Test]
    public void FromBlocksListsFlaggedBlocksAndRefinesThemWithAnElementMask()
    {
        // 10 tokens, blocks of 4 (3 blocks); flags: lower triangle of blocks.
        bool[] flags = [true, false, false, true, true, false, true, true, true];
        using var full = BlockMask.FromBlocks(flags, 10, 10, 4, 4);
        Assert.That(full.GetKeyBlocks(0, 0, 2), Is.EqualTo(new[] { new MaskBlock(0, BlockKind.Full), new MaskBlock(1, BlockKind.Full), new MaskBlock(2, BlockKind.Full) }));
        Assert.That(full.ElementMask, Is.Null);

        using var causal = BlockMask.FromBlocks(flags, 10, 10, 4, 4, elementMask: ElementMask.Causal);
        Assert.That(causal.GetKeyBlocks(0, 0, 1), Is.EqualTo(new[] { new MaskBlock(0, BlockKind.Full), new MaskBlock(1, BlockKind.Partial) }));
        for (var q = 0; q < 10; q++)
        {
            for (var k = 0; k < 10; k++)
            {
                Assert.That(causal.Allows(0, 0, q, k), Is.EqualTo(k <= q), $"({q}, {k})");
            }
        }

        // A flagged block the element mask empties is dropped: window (0, 0) leaves only diagonal blocks.
        using var diagonal = BlockMask.FromBlocks(flags, 10, 10, 4, 4, elementMask: ElementMask.SlidingWindow(0, 0));
        Assert.That(diagonal.BlockCount, Is.EqualTo(3));
    }

    [Test]
    public void FromCompressedRowsKeepsTheGivenListsPerHead()
    {
        // 2 heads × 2 query blocks: head 0 row 0 → {0 full, 2 partial}; row 1 → {}; head 1 row 0 → {1}; row 1 → {0, 1, 2}.
        int[] offsets = [0, 2, 2, 3, 6];
        int[] blocks = [0, 2, 1, 0, 1, 2];
        BlockKind[] kinds = [BlockKind.Full, BlockKind.Partial, BlockKind.Full, BlockKind.Full, BlockKind.Full, BlockKind.Full];
        using var mask = BlockMask.FromCompressedRows(offsets, blocks, kinds, 8, 9, 4, 3, heads: 2, elementMask: ElementMask.Causal);
        Assert.That(mask.Heads, Is.EqualTo(2));
        Assert.That(mask.GetKeyBlocks(0, 1, 1).Select(e => e.Index), Is.EqualTo(new[] { 0, 1, 2 }));
        Assert.That(mask.GetKeyBlocks(0, 0, 1), Is.Empty);
        Assert.That(mask.Allows(0, 0, 3, 7), Is.False, "partial block (0, 2) under causal: key 7 > query 3");
        Assert.That(mask.Allows(0, 0, 3, 1), Is.True, "full block (0, 0)");
        Assert.That(mask.Allows(0, 0, 3, 4), Is.False, "block (0, 1) is not listed for head 0");
        Assert.That(mask.Allows(0, 1, 3, 4), Is.True, "block (0, 1) is listed full for head 1");
    }

    [Test]
    public void ADisposedMaskUploadsAgainOnItsNextUse()
    {
        var c = RandomMaskCase.Create(5);
        var mask = c.Mask();
        var first = BlockSparseKernelTests.Forward(c);
        var output = new float[c.Data.OutputLength];
        BlockSparseAttention.Forward(c.Data.Query, c.Data.Key, c.Data.Value, mask, c.Shape, c.Options(), output);
        mask.Dispose();
        mask.ElementMask?.Dispose();
        var again = new float[c.Data.OutputLength];
        BlockSparseAttention.Forward(c.Data.Query, c.Data.Key, c.Data.Value, mask, c.Shape, c.Options(), again);
        Assert.That(again, Is.EqualTo(first.Output).AsCollection);
        Assert.That(output, Is.EqualTo(first.Output).AsCollection);
    }

    /// <summary>Invalid masks, each with the parameter it must name and a fragment of its message.</summary>
    public static IEnumerable<TestCaseData> InvalidMasks()
    {
        TestCaseData Case(string name, Func<BlockMask> build, string param, string fragment)
            => new TestCaseData(build, param, fragment).SetName($"{{m}}({name})");

        // 8 queries, 9 keys, blocks 4 × 3: 2 query blocks, 3 key blocks.
        BlockMask Rows(int[] offsets, int[] blocks, BlockKind[]? kinds = null, ElementMask? element = null, int heads = 1)
            => BlockMask.FromCompressedRows(offsets, blocks, kinds ?? [], 8, 9, 4, 3, heads: heads, elementMask: element);

        yield return Case("block index out of range", () => Rows([0, 1, 2], [0, 3]), "keyBlocks", "must be in [0, 3)");
        yield return Case("negative block index", () => Rows([0, 1, 2], [-1, 0]), "keyBlocks", "must be in [0, 3)");
        yield return Case("unsorted row", () => Rows([0, 2, 2], [2, 1]), "keyBlocks", "sorted ascending");
        yield return Case("duplicate block", () => Rows([0, 2, 2], [1, 1]), "keyBlocks", "repeats block 1");
        yield return Case("offsets of the wrong length", () => Rows([0, 1], [0]), "rowOffsets", "needs exactly 3");
        yield return Case("offsets not starting at 0", () => Rows([1, 1, 2], [0, 1]), "rowOffsets", "starts at 0");
        yield return Case("offsets decreasing", () => Rows([0, 2, 1], [0]), "rowOffsets", "decreases at row 1");
        yield return Case("offsets not ending at the entry count", () => Rows([0, 1, 1], [0, 1]), "rowOffsets", "they must match");
        yield return Case("kinds of the wrong length", () => Rows([0, 1, 2], [0, 1], [BlockKind.Full]), "kinds", "one kind per entry");
        yield return Case("partial without an element mask", () => Rows([0, 1, 2], [0, 1], [BlockKind.Full, BlockKind.Partial]), "kinds", "need a predicate");
        yield return Case("undefined kind", () => Rows([0, 1, 2], [0, 1], [BlockKind.Full, (BlockKind)7], ElementMask.Causal), "kinds", "not Full or Partial");
        yield return Case("element mask of other sizes", () => Rows([0, 0, 0], [], element: ElementMask.Dense(new bool[16], 4, 4)), "elementMask", "built for 4 query × 4 key tokens");
        yield return Case("element mask with other heads", () => Rows([0, 0, 0, 0, 0], [], element: ElementMask.Dense(new bool[3 * 72], 8, 9, heads: 3), heads: 2), "elementMask", "each count must be 1 or equal");
        yield return Case("zero block size", () => BlockMask.FromDense(new bool[72], 8, 9, 0, 3), "queryBlockSize", "at least 1");
        yield return Case("zero tokens", () => BlockMask.FromDense([], 0, 9, 4, 3), "queryTokens", "at least 1");
        yield return Case("dense mask of the wrong length", () => BlockMask.FromDense(new bool[71], 8, 9, 4, 3), "mask", "needs exactly 72");
        yield return Case("block flags of the wrong length", () => BlockMask.FromBlocks(new bool[5], 8, 9, 4, 3), "blocks", "needs exactly 6");
        yield return Case("window side below -1", () => BlockMasks.SlidingWindow(8, 8, -2, 0, 4, 4), "left", "−1 (no limit)");
        yield return Case("cu_seqlens not starting at 0", () => BlockMasks.Documents([1, 5], 4, 4), "cumulativeSequenceLengths", "start at 0");
        yield return Case("cu_seqlens decreasing", () => BlockMasks.Documents([0, 5, 3], 4, 4), "cumulativeSequenceLengths", "decreases at index 2");
        yield return Case("HaloNet block not dividing the grid", () => BlockMasks.HaloNet((6, 8), 4, 1), "tokenTile", "does not divide the extent 6");
        yield return Case("too many dense heads", () => BlockMasks.StridedHeads(16, 2, 4, 1, 2, denseHeads: 3), "denseHeads", "between 0 and heads");
        yield return Case("segment ids not whole rows", () => BlockMasks.Segments([0, 0, 1], 2, 2, batches: 2), "querySegments", "batches·Nq");
        yield return Case("key length beyond Nk", () => BlockMasks.KeyPadding([3, 10], 4, 9, 2, 2), "keyLengths", "between 0 and keyTokens");
    }

    [TestCaseSource(nameof(InvalidMasks))]
    public void InvalidMasksAreRejectedWithAClearMessage(Func<BlockMask> build, string param, string fragment)
    {
        var ex = Assert.Throws<ArgumentException>(() => build());
        Assert.That(ex!.ParamName, Is.EqualTo(param), ex.Message);
        Assert.That(ex.Message, Does.Contain(fragment));
    }
}
