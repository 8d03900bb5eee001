namespace Natten.Tests.BlockSparse;

/// <summary>
/// Every <see cref="BlockMasks"/> builder against its paper's definition, written here independently:
/// pair by pair, block lists tight (nothing listed that allows nothing, no mixed block marked full), and
/// the fused kernels under the mask against the Reference under the definition.
/// </summary>
public sealed class BlockMaskBuilderTests
{
    [TestCase(13, 13, 2, 1, 4, 4)]
    [TestCase(20, 20, 0, 0, 3, 5)]
    [TestCase(9, 23, 3, 2, 4, 8)]
    [TestCase(23, 9, 1, 4, 8, 2)]
    [TestCase(17, 17, -1, 0, 5, 5)]
    [TestCase(17, 17, 3, -1, 16, 3)]
    [TestCase(12, 12, -1, -1, 5, 7)]
    public void SlidingWindowFollowsFlashAttentionSemantics(int nq, int nk, int left, int right, int bq, int bk)
    {
        using var mask = BlockMasks.SlidingWindow(nq, nk, left, right, bq, bk);
        bool Definition(int b, int h, int q, int k)
        {
            var aligned = q + nk - nq; // FlashAttention aligns the last query with the last key
            return (left < 0 || k >= aligned - left) && (right < 0 || k <= aligned + right);
        }

        BuilderCheck.SamePairs(mask, 1, 1, Definition, "sliding window");
        BuilderCheck.KernelsMatch(mask, new BlockSparseShape(1, nq, nk, 2, 4) { KvHeads = 1, ValueDim = 3 }, Definition, seed: nq * 31 + nk);
    }

    [Test]
    public void SlidingWindowIsTruncatedAtTheBordersNotShifted()
    {
        // n = 6, left 2, right 1: query 0 sees {0, 1} (neighborhood attention would shift to 4 keys), query 5 sees {3, 4, 5}.
        using var mask = BlockMasks.SlidingWindow(6, 6, 2, 1, 2, 2);
        int[][] expected = [[0, 1], [0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5]];
        for (var q = 0; q < 6; q++)
        {
            Assert.That(Enumerable.Range(0, 6).Where(k => mask.Allows(0, 0, q, k)), Is.EqualTo(expected[q]), $"query {q}");
        }
    }

    [TestCase(11, 11, 4, 4)]
    [TestCase(7, 12, 3, 5)]
    public void CausalIsBottomRightAligned(int nq, int nk, int bq, int bk)
    {
        using var mask = BlockMasks.Causal(nq, nk, bq, bk);
        bool Definition(int b, int h, int q, int k) => k <= q + nk - nq;
        BuilderCheck.SamePairs(mask, 1, 1, Definition, "causal");
        BuilderCheck.KernelsMatch(mask, new BlockSparseShape(2, nq, nk, 1, 5), Definition, seed: 5, backward: nq == nk);
    }

    [TestCase(true)]
    [TestCase(false)]
    public void StridedHeadsShardTheContextAcrossHeads(bool causal)
    {
        const int tokens = 40, heads = 6, blockSize = 4, local = 2, stride = 3, dense = 1;
        using var mask = BlockMasks.StridedHeads(tokens, heads, blockSize, local, stride, dense, causal);
        bool Definition(int b, int h, int q, int k)
        {
            var (qb, kb) = (q / blockSize, k / blockSize);
            var near = causal ? qb - kb >= 0 && qb - kb < local : Math.Abs(qb - kb) < local;
            var shard = kb % stride == (h - dense) % stride;
            return (!causal || k <= q) && (h < dense || near || shard);
        }

        BuilderCheck.SamePairs(mask, 1, heads, Definition, "strided heads");
        BuilderCheck.KernelsMatch(mask, new BlockSparseShape(1, tokens, tokens, heads, 4) { KvHeads = 2 }, Definition, seed: 9);

        // The union property: every pair causal attention (or full attention) allows is seen by some sparse head,
        // while each sparse head alone skips most of the distant blocks.
        for (var q = 0; q < tokens; q++)
        {
            for (var k = 0; k < tokens; k++)
            {
                var inContext = !causal || k <= q;
                Assert.That(Enumerable.Range(dense, heads - dense).Any(h => mask.Allows(0, h, q, k)), Is.EqualTo(inContext), $"union at ({q}, {k})");
            }
        }

        var blocks = mask.QueryBlocks * mask.KeyBlocks;
        for (var h = dense; h < heads; h++)
        {
            var listed = Enumerable.Range(0, mask.QueryBlocks).Sum(qb => mask.GetKeyBlocks(0, h, qb).Count);
            Assert.That(listed, Is.LessThan(blocks * 0.7), $"head {h} should be a shard, not dense");
        }

        Assert.That(Enumerable.Range(0, mask.QueryBlocks).Sum(qb => mask.GetKeyBlocks(0, 0, qb).Count), Is.EqualTo(causal ? 55 : 100), "the dense head");
    }

    [TestCase(8, 8, 2, 1)]
    [TestCase(6, 9, 3, 2)]
    [TestCase(4, 4, 2, 0)]
    public void HaloNet2DBlockOrderPadsWithAbsentKeys(int height, int width, int block, int halo)
    {
        using var mask = BlockMasks.HaloNet((height, width), block, halo);
        Assert.That(mask.QueryBlockSize, Is.EqualTo(block * block));
        (int Y, int X) Coordinates(int token)
        {
            var (tile, inside) = (token / (block * block), token % (block * block));
            return ((tile / (width / block) * block) + (inside / block), (tile % (width / block) * block) + (inside % block));
        }

        bool Definition(int b, int h, int q, int k)
        {
            var (qy, qx) = Coordinates(q);
            var (ky, kx) = Coordinates(k);
            var (y0, x0) = (qy / block * block, qx / block * block);
            return ky >= y0 - halo && ky < y0 + block + halo && kx >= x0 - halo && kx < x0 + block + halo;
        }

        BuilderCheck.SamePairs(mask, 1, 1, Definition, "HaloNet 2D");
        BuilderCheck.KernelsMatch(mask, new BlockSparseShape(1, height * width, height * width, 2, 4) { ValueDim = 2 }, Definition, seed: height + width);

        // Zero padding: the corner query sees (b + h)², an interior one (b + 2h)².
        var corner = Enumerable.Range(0, height * width).Count(k => mask.Allows(0, 0, 0, k));
        Assert.That(corner, Is.EqualTo((block + halo) * (block + halo)), "corner");
        if (height / block >= 3 && width / block >= 3)
        {
            var interior = Enumerable.Range(0, height * width).First(t => Coordinates(t) == (block, block));
            Assert.That(Enumerable.Range(0, height * width).Count(k => mask.Allows(0, 0, interior, k)), Is.EqualTo((block + 2 * halo) * (block + 2 * halo)), "interior");
        }
    }

    [Test]
    public void HaloNet3DAndRowMajorOrder()
    {
        using var blocked = BlockMasks.HaloNet((4, 4, 4), 2, 1);
        (int, int, int) Blocked(int t)
        {
            var (tile, i) = (t / 8, t % 8);
            return ((tile / 4 * 2) + (i / 4), (tile / 2 % 2 * 2) + (i / 2 % 2), (tile % 2 * 2) + (i % 2));
        }

        bool Near((int, int, int) q, (int, int, int) k)
        {
            static bool Axis(int qc, int kc) => kc >= (qc / 2 * 2) - 1 && kc <= (qc / 2 * 2) + 2;
            return Axis(q.Item1, k.Item1) && Axis(q.Item2, k.Item2) && Axis(q.Item3, k.Item3);
        }

        BuilderCheck.SamePairs(blocked, 1, 1, (b, h, q, k) => Near(Blocked(q), Blocked(k)), "HaloNet 3D");
        BuilderCheck.KernelsMatch(blocked, new BlockSparseShape(1, 64, 64, 1, 3), (b, h, q, k) => Near(Blocked(q), Blocked(k)), seed: 4, backward: false);

        using var rowMajor = BlockMasks.HaloNet((5, 6), 2, 1, 7, 5);
        bool RowMajor(int b, int h, int q, int k)
        {
            var (qy, qx, ky, kx) = (q / 6, q % 6, k / 6, k % 6);
            return ky >= (qy / 2 * 2) - 1 && ky <= (qy / 2 * 2) + 2 && kx >= (qx / 2 * 2) - 1 && kx <= (qx / 2 * 2) + 2;
        }

        BuilderCheck.SamePairs(rowMajor, 1, 1, RowMajor, "HaloNet row-major");
        BuilderCheck.KernelsMatch(rowMajor, new BlockSparseShape(1, 30, 30, 2, 4), RowMajor, seed: 6);
    }

    [Test]
    public void SegmentsIn1D2D3DKeepTokensInsideTheirRegion()
    {
        // 1D: runs; 2D: a 6×7 map of rectangles with an excluded strip; 3D: 3×3×4 octants by parity.
        int[] oneD = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0, 0, -1, 3];
        var twoD = new int[6 * 7];
        for (var y = 0; y < 6; y++)
        {
            for (var x = 0; x < 7; x++)
            {
                twoD[(y * 7) + x] = x == 3 ? -1 : (y < 3 ? 0 : 2) + (x < 3 ? 0 : 1);
            }
        }

        var threeD = new int[3 * 3 * 4];
        for (var t = 0; t < threeD.Length; t++)
        {
            threeD[t] = (t / 12 % 2 * 4) + (t / 4 % 3 % 2 * 2) + (t % 4 / 2);
        }

        foreach (var (segments, bq, bk, name) in new[] { (oneD, 3, 4, "1D"), (twoD, 7, 5, "2D"), (threeD, 4, 6, "3D") })
        {
            using var mask = BlockMasks.Segments(segments, bq, bk);
            bool Definition(int b, int h, int q, int k) => segments[q] >= 0 && segments[q] == segments[k];
            BuilderCheck.SamePairs(mask, 1, 1, Definition, $"segments {name}");
            BuilderCheck.KernelsMatch(mask, new BlockSparseShape(1, segments.Length, segments.Length, 2, 4) { KvHeads = 1 }, Definition, seed: segments.Length);
        }
    }

    [TestCase(false)]
    [TestCase(true)]
    public void DocumentsFollowCumulativeSequenceLengths(bool causal)
    {
        int[] cu = [0, 5, 5, 12, 20, 21];
        using var mask = BlockMasks.Documents(cu, 4, 3, causal);
        int Document(int t) => Enumerable.Range(0, cu.Length - 1).First(d => t >= cu[d] && t < cu[d + 1]);
        bool Definition(int b, int h, int q, int k) => Document(q) == Document(k) && (!causal || k <= q);
        BuilderCheck.SamePairs(mask, 1, 1, Definition, "documents");
        BuilderCheck.KernelsMatch(mask, new BlockSparseShape(1, 21, 21, 2, 3) { ValueDim = 5 }, Definition, seed: causal ? 1 : 2);
    }

    [Test]
    public void KeyPaddingHidesPaddedKeysAndEmptiesFullyPaddedEntries()
    {
        int[] lengths = [5, 0, 9];
        using var mask = BlockMasks.KeyPadding(lengths, queryTokens: 7, keyTokens: 9, queryBlockSize: 4, keyBlockSize: 4);
        Assert.That(mask.Batches, Is.EqualTo(3));
        bool Definition(int b, int h, int q, int k) => k < lengths[b];
        BuilderCheck.SamePairs(mask, 3, 1, Definition, "key padding");
        BuilderCheck.KernelsMatch(mask, new BlockSparseShape(3, 7, 9, 2, 4) { KvHeads = 2 }, Definition, seed: 8);
    }
}
