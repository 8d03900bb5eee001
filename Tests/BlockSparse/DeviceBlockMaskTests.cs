using Natten.Reference;
using Natten.Tests.Support;

namespace Natten.Tests.BlockSparse;

/// <summary>
/// Block masks built on an accelerator (<see cref="BlockMask.CreateOnDevice"/>, <see cref="BlockMask.FromBlocksOnDevice"/>,
/// the <see cref="BlockMasks"/> builders with a device): the same lists as the host build — rows, kinds, order and the
/// transposed lists — for random dense masks and every builder on random shapes; attention through them against the
/// Reference; the lists stay on the device; validation as on the host.
/// </summary>
public sealed class DeviceBlockMaskTests
{
    private static AttentionDevice Device => AttentionDevice.Default;

    public static IEnumerable<TestCaseData> DenseSeeds()
        => Enumerable.Range(1, TestData.SweepCount(40, 400)).Select(s => new TestCaseData(s).SetName($"{{m}}(seed {s})"));

    public static IEnumerable<TestCaseData> BuilderCases()
    {
        string[] builders =
            ["sliding window", "causal", "strided heads", "HaloNet blocked", "HaloNet row-major", "segments", "cross segments",
             "documents", "key padding flags", "key padding lengths", "neighborhood", "documents and window"];
        var seeds = TestData.SweepCount(6, 60);
        foreach (var builder in builders)
        {
            for (var seed = 1; seed <= seeds; seed++)
            {
                yield return new TestCaseData(builder, seed).SetName($"{{m}}({builder}, seed {seed})");
            }
        }
    }

    [TestCaseSource(nameof(DenseSeeds))]
    public void RandomDenseMasksGiveTheHostLists(int seed)
    {
        var c = RandomMaskCase.Create(seed);
        using var host = c.Mask();
        using var element = ElementMask.Dense(c.Dense, c.Shape.QueryTokens, c.Shape.KeyTokens, c.MaskHeads, c.MaskBatches);
        using var device = BlockMask.CreateOnDevice(Device, element, c.Shape.QueryTokens, c.Shape.KeyTokens, c.QueryBlock, c.KeyBlock);
        AssertSameLists(host, device, c.ToString());
    }

    [TestCaseSource(nameof(BuilderCases))]
    public void BuildersGiveTheHostListsOnTheDevice(string builder, int seed)
    {
        var build = RandomBuilder(builder, new Random((seed * 97) + builder.Length));
        using var host = build(null);
        using var device = build(Device);
        AssertSameLists(host, device, $"{builder}: {host}");
    }

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    [TestCase(4)]
    public void LowResolutionFlagsGiveTheHostLists(int seed)
    {
        var rng = new Random(seed);
        var (nq, nk, bq, bk) = (rng.Next(1, 40), rng.Next(1, 40), rng.Next(1, 9), rng.Next(1, 9));
        var (heads, batches) = (rng.Next(1, 3), rng.Next(1, 3));
        var (qbs, kbs) = ((nq + bq - 1) / bq, (nk + bk - 1) / bk);
        var flags = Enumerable.Range(0, batches * heads * qbs * kbs).Select(_ => rng.Next(3) != 0).ToArray();
        var window = ElementMask.SlidingWindow(rng.Next(-1, 6), rng.Next(-1, 6), nk - nq);

        // A per-head dense element mask over flags shared by every head (or per head too): the lists take the larger plane count.
        using var perHead = ElementMask.Dense(Enumerable.Range(0, 2 * nq * nk).Select(_ => rng.Next(4) != 0).ToArray(), nq, nk, heads: 2);
        foreach (var (element, name) in new[] { (null, "none"), (window, "window"), (perHead, "per-head dense") })
        {
            using var host = BlockMask.FromBlocks(flags, nq, nk, bq, bk, heads, batches, element);
            using var device = BlockMask.FromBlocksOnDevice(Device, flags, nq, nk, bq, bk, heads, batches, element);
            Assert.That(device.Heads, Is.EqualTo(element == perHead ? 2 : heads), name);
            AssertSameLists(host, device, $"flags {batches}x{heads}, element {name}: {host}");
        }
    }

    [Test]
    public void AnEmptyPatternGivesEmptyListsOnTheDevice()
    {
        using var element = ElementMask.Dense(new bool[7 * 10], 7, 10);
        using var device = BlockMask.CreateOnDevice(Device, element, 7, 10, 3, 4);
        Assert.That((device.BlockCount, device.PartialBlockCount, device.ElementMask), Is.EqualTo((0, 0, (ElementMask?)null)));
        using var host = BlockMask.Create(element, 7, 10, 3, 4);
        AssertSameLists(host, device, "empty");
    }

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    [TestCase(4)]
    [TestCase(5)]
    [TestCase(6)]
    public void AttentionThroughADeviceBuiltMaskMatchesTheReference(int seed)
    {
        var c = RandomMaskCase.Create(seed + 500);
        using var element = ElementMask.Dense(c.Dense, c.Shape.QueryTokens, c.Shape.KeyTokens, c.MaskHeads, c.MaskBatches);
        using var mask = BlockMask.CreateOnDevice(Device, element, c.Shape.QueryTokens, c.Shape.KeyTokens, c.QueryBlock, c.KeyBlock);
        var dims = c.Data.Dims();
        var (q, k, v) = (TestData.ToDouble(c.Data.Query), TestData.ToDouble(c.Data.Key), TestData.ToDouble(c.Data.Value));
        using var dq = Device.Upload<float>(c.Data.Query, c.Data.Query.Length);
        using var dk = Device.Upload<float>(c.Data.Key, c.Data.Key.Length);
        using var dv = Device.Upload<float>(c.Data.Value, c.Data.Value.Length);
        using var o = Device.Allocate<float>((int)c.Data.OutputLength);
        using var l = Device.Allocate<float>((int)c.Data.LseLength);
        BlockSparseAttention.Forward(dq, dk, dv, mask, c.Shape, c.Options(), o, l);
        var (output, lse) = (o.ToArray(), l.ToArray());
        var expected = ReferenceAttention.DenseMasked(dims, q, k, v, c.Allows);
        var plain = PlainMaskedAttention.Forward(dims, c.Data.Query, c.Data.Key, c.Data.Value, c.Allows);
        MaskedAssert.Rule(expected.Output, output, plain.Output, Tolerance.Float32Floor, $"output, {c}");
        MaskedAssert.Rule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, $"lse, {c}");

        var outputGrad = TestData.Floats(new Random(seed + 7), c.Data.OutputLength);
        using var dO = Device.Upload<float>(outputGrad, outputGrad.Length);
        using var gq = Device.Allocate<float>(c.Data.Query.Length);
        using var gk = Device.Allocate<float>(c.Data.Key.Length);
        using var gv = Device.Allocate<float>(c.Data.Value.Length);
        BlockSparseAttention.Backward(dq, dk, dv, o, l, dO, mask, c.Shape, c.Options(), gq, gk, gv);
        var grads = ReferenceAttention.DenseMaskedBackward(dims, q, k, v, TestData.ToDouble(outputGrad), c.Allows);
        MaskedAssert.Within(grads.Query, gq.ToArray(), Tolerance.Float32Gradient, $"dQ, {c}");
        MaskedAssert.Within(grads.Key, gk.ToArray(), Tolerance.Float32Gradient, $"dK, {c}");
        MaskedAssert.Within(grads.Value, gv.ToArray(), Tolerance.Float32Gradient, $"dV, {c}");

        // The kernels used the lists the build left on the device: no host copy was needed for any of this.
        Assert.That(mask.HasHostLists, Is.False, "a device-built mask is not copied to the host by device calls");
    }

    [TestCase(13, 13, 2, 1, 4, 4)]
    [TestCase(9, 23, 3, 2, 4, 8)]
    [TestCase(17, 17, -1, 0, 5, 5)]
    public void BuilderMasksBuiltOnTheDeviceRunThroughTheKernels(int nq, int nk, int left, int right, int bq, int bk)
    {
        using var mask = BlockMasks.SlidingWindow(nq, nk, left, right, bq, bk, Device);
        bool Definition(int b, int h, int q, int k)
        {
            var aligned = q + nk - nq;
            return (left < 0 || k >= aligned - left) && (right < 0 || k <= aligned + right);
        }

        BuilderCheck.KernelsMatch(mask, new BlockSparseShape(1, nq, nk, 2, 4) { KvHeads = 1, ValueDim = 3 }, Definition, seed: nq * 31 + nk);
        BuilderCheck.SamePairs(mask, 1, 1, Definition, "sliding window built on the device");
    }

    [Test]
    public void DocumentsBuiltOnTheDeviceRunThroughTheKernels()
    {
        int[] cu = [0, 5, 6, 14, 22];
        using var mask = BlockMasks.Documents(cu, 4, 3, causal: true, device: Device);
        int Doc(int t) => Array.FindLastIndex(cu, x => x <= t);
        bool Definition(int b, int h, int q, int k) => Doc(q) == Doc(k) && k <= q;
        BuilderCheck.KernelsMatch(mask, new BlockSparseShape(2, 22, 22, 2, 8), Definition, seed: 41);
        BuilderCheck.SamePairs(mask, 1, 1, Definition, "causal documents built on the device");
    }

    [Test]
    public void ADisposedDeviceBuiltMaskKeepsItsListsAndUploadsAgain()
    {
        var c = RandomMaskCase.Create(9);
        using var element = ElementMask.Dense(c.Dense, c.Shape.QueryTokens, c.Shape.KeyTokens, c.MaskHeads, c.MaskBatches);
        var mask = BlockMask.CreateOnDevice(Device, element, c.Shape.QueryTokens, c.Shape.KeyTokens, c.QueryBlock, c.KeyBlock);
        var first = new float[c.Data.OutputLength];
        BlockSparseAttention.Forward(c.Data.Query, c.Data.Key, c.Data.Value, mask, c.Shape, c.Options(), first);
        Assert.That(mask.HasHostLists, Is.False);
        mask.Dispose();
        Assert.That(mask.HasHostLists, Is.True, "Dispose copies the lists to the host before freeing them on the device");
        using var host = c.Mask();
        AssertSameLists(host, mask, c.ToString());
        var again = new float[c.Data.OutputLength];
        BlockSparseAttention.Forward(c.Data.Query, c.Data.Key, c.Data.Value, mask, c.Shape, c.Options(), again);
        Assert.That(again, Is.EqualTo(first).AsCollection);
        mask.Dispose();
    }

    /// <summary>Invalid inputs: the device build throws what the host build throws (parameter and message).</summary>
    public static IEnumerable<TestCaseData> InvalidBuilds()
    {
        TestCaseData Case(string name, Func<AttentionDevice?, BlockMask> build) => new TestCaseData(build).SetName($"{{m}}({name})");
        BlockMask Create(AttentionDevice? device, ElementMask element, int nq, int nk, int bq, int bk)
            => device is null ? BlockMask.Create(element, nq, nk, bq, bk) : BlockMask.CreateOnDevice(device, element, nq, nk, bq, bk);
        BlockMask Flags(AttentionDevice? device, bool[] flags, int nq, int nk, int bq, int bk, ElementMask? element = null, int heads = 1)
            => device is null
                ? BlockMask.FromBlocks(flags, nq, nk, bq, bk, heads, elementMask: element)
                : BlockMask.FromBlocksOnDevice(device, flags, nq, nk, bq, bk, heads, elementMask: element);

        yield return Case("zero query block size", d => Create(d, ElementMask.Causal, 8, 8, 0, 4));
        yield return Case("zero key tokens", d => Create(d, ElementMask.Causal, 8, 0, 4, 4));
        yield return Case("negative key block size", d => Create(d, ElementMask.Causal, 8, 8, 4, -2));
        yield return Case("element mask of other sizes", d => Create(d, ElementMask.Dense(new bool[16], 4, 4), 8, 9, 4, 3));
        yield return Case("segments of other sizes", d => Create(d, ElementMask.Segments([0, 0, 1]), 4, 3, 2, 2));
        yield return Case("flags of the wrong length", d => Flags(d, new bool[5], 8, 9, 4, 3));
        yield return Case("flags with an element mask of other heads", d => Flags(d, new bool[12], 8, 9, 4, 3, ElementMask.Dense(new bool[3 * 72], 8, 9, heads: 3), heads: 2));
        yield return Case("window side below -1", d => BlockMasks.SlidingWindow(8, 8, -2, 0, 4, 4, d));
        yield return Case("cu_seqlens decreasing", d => BlockMasks.Documents([0, 5, 3], 4, 4, device: d));
        yield return Case("HaloNet block not dividing the grid", d => BlockMasks.HaloNet((6, 8), 4, 1, d));
        yield return Case("too many dense heads", d => BlockMasks.StridedHeads(16, 2, 4, 1, 2, denseHeads: 3, device: d));
        yield return Case("key length beyond Nk", d => BlockMasks.KeyPadding([3, 10], 4, 9, 2, 2, d));
        yield return Case("neighborhood kernel beyond the grid", d => BlockMasks.Neighborhood(5, new NeighborhoodAttentionOptions(kernelSize: 7), 2, 2, d));
    }

    [TestCaseSource(nameof(InvalidBuilds))]
    public void InvalidBuildsThrowAsOnTheHost(Func<AttentionDevice?, BlockMask> build)
    {
        var onHost = Assert.Throws<ArgumentException>(() => build(null));
        var onDevice = Assert.Throws<ArgumentException>(() => build(Device));
        Assert.That((onDevice!.ParamName, onDevice.Message), Is.EqualTo((onHost!.ParamName, onHost.Message)));
    }

    [Test]
    public void NullArgumentsAreRejected()
    {
        Assert.Throws<ArgumentNullException>(() => BlockMask.CreateOnDevice(null!, ElementMask.Causal, 4, 4, 2, 2));
        Assert.Throws<ArgumentNullException>(() => BlockMask.CreateOnDevice(Device, null!, 4, 4, 2, 2));
        Assert.Throws<ArgumentNullException>(() => BlockMask.FromBlocksOnDevice(null!, new bool[4], 4, 4, 2, 2));
    }

    /// <summary>Same sizes, counts, element mask, and every forward and transposed list (indices, kinds, order).</summary>
    internal static void AssertSameLists(BlockMask host, BlockMask device, string what)
    {
        Assert.That(
            (device.QueryTokens, device.KeyTokens, device.QueryBlockSize, device.KeyBlockSize, device.Batches, device.Heads),
            Is.EqualTo((host.QueryTokens, host.KeyTokens, host.QueryBlockSize, host.KeyBlockSize, host.Batches, host.Heads)),
            $"{what}: sizes");
        Assert.That((device.BlockCount, device.PartialBlockCount), Is.EqualTo((host.BlockCount, host.PartialBlockCount)), $"{what}: counts");
        // Each side built its own element mask from the same definition: kept (or dropped for want of partial blocks) alike.
        Assert.That(device.ElementMask?.GetType(), Is.EqualTo(host.ElementMask?.GetType()), $"{what}: element mask");
        for (var b = 0; b < host.Batches; b++)
        {
            for (var h = 0; h < host.Heads; h++)
            {
                for (var qb = 0; qb < host.QueryBlocks; qb++)
                {
                    Assert.That(device.GetKeyBlocks(b, h, qb), Is.EqualTo(host.GetKeyBlocks(b, h, qb)), $"{what}: batch {b} head {h} query block {qb}");
                }

                for (var kb = 0; kb < host.KeyBlocks; kb++)
                {
                    Assert.That(device.GetQueryBlocks(b, h, kb), Is.EqualTo(host.GetQueryBlocks(b, h, kb)), $"{what}: batch {b} head {h} key block {kb} (transposed)");
                }
            }
        }
    }

    /// <summary>A builder with random sizes (block sizes that do not divide the lengths, empty rows where the pattern has them).</summary>
    private static Func<AttentionDevice?, BlockMask> RandomBuilder(string builder, Random rng)
    {
        int Block() => rng.Next(1, 10);
        switch (builder)
        {
            case "sliding window":
            {
                var (nq, nk, left, right, bq, bk) = (rng.Next(1, 50), rng.Next(1, 50), rng.Next(-1, 12), rng.Next(-1, 12), Block(), Block());
                return d => BlockMasks.SlidingWindow(nq, nk, left, right, bq, bk, d);
            }

            case "causal":
            {
                var (nq, nk, bq, bk) = (rng.Next(1, 50), rng.Next(1, 50), Block(), Block());
                return d => BlockMasks.Causal(nq, nk, bq, bk, d);
            }

            case "strided heads":
            {
                var (tokens, heads, block) = (rng.Next(1, 60), rng.Next(1, 6), rng.Next(1, 8));
                var (local, stride, causal) = (rng.Next(1, 4), rng.Next(1, 4), rng.Next(2) == 0);
                var dense = rng.Next(0, heads + 1);
                return d => BlockMasks.StridedHeads(tokens, heads, block, local, stride, dense, causal, d);
            }

            case "HaloNet blocked":
            {
                var block = rng.Next(1, 4);
                var extents = rng.Next(2) == 0
                    ? (AxisValues)(block * rng.Next(1, 5), block * rng.Next(1, 5))
                    : (AxisValues)(block * rng.Next(1, 3), block * rng.Next(1, 3), block * rng.Next(1, 3));
                var halo = rng.Next(0, 3);
                return d => BlockMasks.HaloNet(extents, block, halo, d);
            }

            case "HaloNet row-major":
            {
                var extents = (AxisValues)(rng.Next(1, 8), rng.Next(1, 8));
                var (block, halo, bq, bk) = (rng.Next(1, 4), rng.Next(0, 3), Block(), Block());
                return d => BlockMasks.HaloNet(extents, block, halo, bq, bk, d);
            }

            case "segments":
            {
                var (batches, tokens) = (rng.Next(1, 3), rng.Next(1, 40));
                var ids = RandomIds(rng, batches * tokens);
                var (bq, bk) = (Block(), Block());
                return d => BlockMasks.Segments(ids, bq, bk, batches, d);
            }

            case "cross segments":
            {
                var (batches, nq, nk) = (rng.Next(1, 3), rng.Next(1, 40), rng.Next(1, 40));
                var (queryIds, keyIds) = (RandomIds(rng, batches * nq), RandomIds(rng, batches * nk));
                var (bq, bk) = (Block(), Block());
                return d => BlockMasks.Segments(queryIds, keyIds, bq, bk, batches, d);
            }

            case "documents":
            case "documents and window":
            {
                var cu = new List<int> { 0 };
                for (var i = rng.Next(1, 6); i > 0; i--)
                {
                    cu.Add(cu[^1] + rng.Next(0, 12));
                }

                if (cu[^1] == 0)
                {
                    cu.Add(rng.Next(1, 9));
                }

                var (bq, bk, causal) = (Block(), Block(), rng.Next(2) == 0);
                if (builder == "documents")
                {
                    return d => BlockMasks.Documents(cu.ToArray(), bq, bk, causal, d);
                }

                var tokens = cu[^1];
                var ids = new int[tokens];
                for (var i = 0; i + 1 < cu.Count; i++)
                {
                    ids.AsSpan(cu[i], cu[i + 1] - cu[i]).Fill(i);
                }

                var element = ElementMask.Segments(ids).And(ElementMask.SlidingWindow(rng.Next(0, 6), rng.Next(-1, 3)));
                return d => d is null ? BlockMask.Create(element, tokens, tokens, bq, bk) : BlockMask.CreateOnDevice(d, element, tokens, tokens, bq, bk);
            }

            case "key padding flags":
            {
                var (batches, nq, nk, bq, bk) = (rng.Next(1, 4), rng.Next(1, 30), rng.Next(1, 30), Block(), Block());
                var valid = Enumerable.Range(0, batches * nk).Select(_ => rng.Next(3) != 0).ToArray();
                return d => BlockMasks.KeyPadding(valid, nq, bq, bk, batches, d);
            }

            case "key padding lengths":
            {
                var (nq, nk, bq, bk) = (rng.Next(1, 30), rng.Next(1, 30), Block(), Block());
                var lengths = Enumerable.Range(0, rng.Next(1, 4)).Select(_ => rng.Next(0, nk + 1)).ToArray();
                return d => BlockMasks.KeyPadding(lengths, nq, nk, bq, bk, d);
            }

            case "neighborhood":
            {
                var rank = rng.Next(1, 3);
                var extents = new int[rank];
                var kernel = new int[rank];
                var dilation = new int[rank];
                var stride = new int[rank];
                var causal = new bool[rank];
                for (var a = 0; a < rank; a++)
                {
                    dilation[a] = rng.Next(1, 3);
                    kernel[a] = rng.Next(2, 5);
                    extents[a] = (kernel[a] * dilation[a]) + rng.Next(0, 6);
                    stride[a] = rng.Next(1, kernel[a] + 1);
                    causal[a] = rng.Next(3) == 0;
                }

                var options = new NeighborhoodAttentionOptions(kernelSize: AxisValues.PerAxis(kernel))
                {
                    Dilation = AxisValues.PerAxis(dilation),
                    Stride = AxisValues.PerAxis(stride),
                    Causal = rank == 1 ? causal[0] : (causal[0], causal[1]),
                };
                var (bq, bk) = (Block(), Block());
                return d => BlockMasks.Neighborhood(AxisValues.PerAxis(extents), options, bq, bk, d);
            }

            default:
                throw new ArgumentOutOfRangeException(nameof(builder), builder, null);
        }
    }

    /// <summary>Segment ids in runs (so some blocks are uniform), with some negative (padding) ids.</summary>
    private static int[] RandomIds(Random rng, int length)
    {
        var ids = new int[length];
        var id = 0;
        for (var i = 0; i < length; i++)
        {
            if (rng.Next(5) == 0)
            {
                id = rng.Next(-1, 4);
            }

            ids[i] = id;
        }

        return ids;
    }
}
