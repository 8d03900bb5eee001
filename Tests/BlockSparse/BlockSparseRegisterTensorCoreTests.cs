using ILGPU.Runtime;
using Natten.BlockSparse;
using Natten.Kernels.BlockSparse;
using Natten.Kernels.BlockSparse.Generated;
using Natten.Kernels.Cuda;
using Natten.Kernels.Fused;
using Natten.Kernels.Runtime;
using Natten.Tests.Support;
using Natten.Validation;
using static Natten.Tests.BlockSparse.BlockSparseTensorCoreTests;
using Half = System.Half;

namespace Natten.Tests.BlockSparse;

/// <summary>
/// The generated register-resident block-sparse forwards (<c>Kernels/BlockSparse/Generated/BlockSparseTensorCoreKernel.D*.g.cs</c>,
/// D = Dv ∈ {32, 64, 128}) on the default accelerator — the CPU accelerator here, through the lane-exact mma and
/// ldmatrix emulations — against the dense-mask oracle by FlashAttention's rule: random block masks with full, partial
/// and empty blocks and empty rows, short and odd blocks (padding slots and rows past the slice), GQA, per-head and
/// per-batch masks, one to four warps, KV sub-tiles shorter and longer than the register chunk, each bias, fp16 and
/// bf16, host spans and device tensors, and both fragment-load kinds (which must agree bit for bit). Every accuracy case
/// first asserts that dispatch takes the register kernel. Shapes are tiny: the emulation synchronises the group twice
/// per mma.
/// </summary>
public sealed class BlockSparseRegisterTensorCoreTests
{
    public static IEnumerable<TestCaseData> Specs()
    {
        Spec[] specs =
        [
            new("fp16 D 32, GQA, blocks 16x16, short last blocks, per-head mask", false, 1, 37, 29, 2, 1, 32, 32, 16, 16, 2, 1, Seed: 61),
            new("bf16 D 32, two warps, tiling 32x32, per-batch mask", true, 2, 40, 45, 1, 1, 32, 32, 32, 32, 1, 2, new BlockSparseTiling(32, 32), Seed: 62),
            new("fp16 D 64, blocks 8x16, per-batch mask", false, 2, 20, 33, 1, 1, 64, 64, 8, 16, 1, 2, Seed: 63),
            new("bf16 D 64, KV sub-tile 48 (a partial register chunk), blocks 16x48", true, 1, 30, 50, 2, 2, 64, 64, 16, 48, 2, 1, new BlockSparseTiling(16, 48), Seed: 64),
            new("bf16 D 128, odd blocks 5x13", true, 1, 23, 27, 2, 2, 128, 128, 5, 13, 1, 1, Seed: 65),
            new("fp16 D 128, GQA, KV sub-tile 64 (two register chunks), blocks 16x64", false, 1, 21, 70, 2, 1, 128, 128, 16, 64, 1, 1, new BlockSparseTiling(16, 64), Seed: 66),
            new("fp16 D 32, four warps, blocks 64x16", false, 1, 70, 40, 1, 1, 32, 32, 64, 16, 1, 1, Seed: 67),
        ];
        return specs.Select(s => new TestCaseData(s).SetName($"{{m}}({s.Name})"));
    }

    [TestCaseSource(nameof(Specs))]
    public void HostSpansFollowTheToleranceRule(Spec spec)
    {
        var c = Case(spec);
        using var mask = c.Mask();
        AssertRegisterPath(c, mask, spec.BFloat16, c.Options());
        var (output, lse) = RunHost(c, mask, spec.BFloat16, c.Options());
        AssertRule(c, spec.BFloat16, output, lse, null);
    }

    /// <summary>ldmatrix's lane-by-lane model and element loads gather the same fragments: the outputs agree bit for bit.</summary>
    [TestCase(32, false)]
    [TestCase(64, true)]
    [TestCase(128, false)]
    public void FragmentLoadKindsAgreeAndFollowTheToleranceRule(int headDim, bool bfloat16)
    {
        var spec = new Spec($"loads D {headDim}", bfloat16, 1, 19, 26, 2, 1, headDim, headDim, 8, 8, 2, 1, Seed: 70 + headDim);
        var c = Case(spec);
        using var mask = c.Mask();
        AssertRegisterPath(c, mask, bfloat16, c.Options());
        (float[] Output, float[] Lse) matrix, elements;
        using (FragmentLoading.Use(FragmentLoadKind.Matrix))
        {
            matrix = RunHost(c, mask, bfloat16, c.Options());
        }

        using (FragmentLoading.Use(FragmentLoadKind.Elements))
        {
            elements = RunHost(c, mask, bfloat16, c.Options());
        }

        AssertRule(c, bfloat16, matrix.Output, matrix.Lse, null);
        Assert.That(elements.Output, Is.EqualTo(matrix.Output).AsCollection, "element loads = ldmatrix (output)");
        Assert.That(elements.Lse, Is.EqualTo(matrix.Lse).AsCollection, "element loads = ldmatrix (LSE)");
    }

    [TestCase(32, false)]
    [TestCase(128, true)]
    public void DenseBiasFollowsTheToleranceRule(int headDim, bool bfloat16)
    {
        var spec = new Spec("dense bias", bfloat16, 1, 19, 24, 2, 1, headDim, headDim, 8, 8, 2, 1, Seed: 81);
        var c = Case(spec);
        var (nq, nk) = (spec.QueryTokens, spec.KeyTokens);
        var values = TestData.Floats(new Random(82), spec.Heads * nq * nk).Select(x => 3 * x).ToArray();
        using var bias = ScoreBias.Dense(values, nq, nk, spec.Heads);
        double Bias(int b, int h, int q, int k) => values[(((h * nq) + q) * nk) + k];
        using var mask = c.Mask();
        var options = c.Options() with { Bias = bias };
        AssertRegisterPath(c, mask, bfloat16, options);
        var (output, lse) = RunHost(c, mask, bfloat16, options);
        AssertRule(c, bfloat16, output, lse, Bias);
    }

    [TestCase(64, true)]
    [TestCase(32, false)]
    public void RelativePositionBiasFollowsTheToleranceRule(int headDim, bool bfloat16)
    {
        // 1D, 30 tokens, K = 7: RPB reaches |j − i| ≤ 6; the random block mask has full and partial blocks.
        const int n = 30, heads = 2, kernel = 7;
        var spec = new Spec("rpb", bfloat16, 1, n, n, heads, heads, headDim, headDim, 8, 8, heads, 1, Seed: 91);
        var c = Case(spec);
        var table = TestData.Floats(new Random(92), heads * ((2 * kernel) - 1));
        using var bias = ScoreBias.RelativePosition(table, heads, n, kernel);
        double Bias(int b, int h, int q, int k) => Math.Abs(k - q) < kernel ? table[(h * ((2 * kernel) - 1)) + k - q + kernel - 1] : 0.0;
        using var mask = c.Mask();
        var options = c.Options() with { Bias = bias };
        AssertRegisterPath(c, mask, bfloat16, options);
        var (output, lse) = RunHost(c, mask, bfloat16, options);
        AssertRule(c, bfloat16, output, lse, Bias);
    }

    [TestCase(false, 32)]
    [TestCase(true, 64)]
    public void DeviceTensorsFollowTheToleranceRuleAndEqualTheSpanPath(bool bfloat16, int headDim)
    {
        var spec = new Spec("device", bfloat16, 1, 26, 21, 2, 1, headDim, headDim, 16, 8, 2, 1, Seed: 101);
        var c = Case(spec);
        using var mask = c.Mask();
        AssertRegisterPath(c, mask, bfloat16, c.Options());
        var (output, lse) = BlockSparseTensorCoreTests.RunDevice(c, mask, bfloat16);
        AssertRule(c, bfloat16, output, lse, null);
        var (hostOutput, hostLse) = RunHost(c, mask, bfloat16, c.Options());
        Assert.That(output, Is.EqualTo(hostOutput).AsCollection, "device output = span output");
        Assert.That(lse, Is.EqualTo(hostLse).AsCollection, "device LSE = span LSE");
    }

    /// <summary>Only the generated head dims with D = Dv take the register kernel; other tensor-core problems keep version 1.</summary>
    [TestCase(32, 32, true)]
    [TestCase(64, 64, true)]
    [TestCase(128, 128, true)]
    [TestCase(16, 16, false)]
    [TestCase(48, 48, false)]
    [TestCase(32, 16, false)]
    [TestCase(64, 32, false)]
    [TestCase(256, 256, false)]
    public void DispatchTakesTheRegisterKernelForGeneratedHeadDimsOnly(int headDim, int valueDim, bool expectRegister)
    {
        var device = DeviceRuntime.Default;
        using var mask = BlockMask.FromBlocks([true, false, true, true], 32, 32, 16, 16);
        var shape = new BlockSparseShape(1, 32, 32, 1, headDim) { ValueDim = valueDim };
        foreach (var type in new[] { ElementType.Float16, ElementType.BFloat16 })
        {
            var problem = ProblemValidator.ValidateBlockSparse(shape, mask, new BlockSparseOptions(), type);
            var p = problem.ToParams();
            Assert.That(BlockSparseTensorCore.UsesRegisterKernel(p), Is.EqualTo(expectRegister), $"D={headDim}, Dv={valueDim}, {type}");
            if (headDim <= 128 || expectRegister)
            {
                Assert.That(FusedBlockSparseBackend.TensorCoreTile(device, problem), Is.Not.Null, $"D={headDim}, Dv={valueDim}, {type}: tensor-core path");
            }

            var tile = BlockSparseTensorCore.Tile(p, null, null);
            Assert.That(tile.Keys, Is.EqualTo(16), "default KV sub-tile, cut to the key block");
            var registerBytes = BlockSparseTensorCore.RegisterStaticSharedBytes + ((tile.Queries + (2 * tile.Keys)) * (headDim + 8) * sizeof(ushort));
            var doubleBuffered = registerBytes + (2 * tile.Keys * (headDim + 8) * sizeof(ushort));
            if (expectRegister)
            {
                Assert.That(BlockSparseTensorCore.SharedBytes(p, tile, KvStagingKind.Elements), Is.EqualTo(registerBytes), "register kernel: scratch + padded Q, K, V");
                Assert.That(BlockSparseTensorCore.SharedBytes(p, tile, KvStagingKind.Async), Is.EqualTo(doubleBuffered), "two K, V buffers");
                Assert.That(BlockSparseTensorCore.Staging(device, p, tile), Is.EqualTo(KvStagingKind.Async), "the default staging");
            }
        }
    }

    [Test]
    public void DefaultKvSubTileIsTheRegisterChunkWhenBlocksAreLarge()
    {
        using var mask = BlockMask.FromBlocks([true], 64, 64, 64, 64);
        foreach (var d in BlockSparseRegisterKernels.HeadDims)
        {
            var shape = new BlockSparseShape(1, 64, 64, 1, d);
            var p = ProblemValidator.ValidateBlockSparse(shape, mask, new BlockSparseOptions(), ElementType.Float16).ToParams();
            var tile = BlockSparseTensorCore.Tile(p, null, null);
            Assert.That(tile.Keys, Is.EqualTo(BlockSparseRegisterKernels.KeyChunk(d)), $"D{d}");
            Assert.That(BlockSparseTensorCore.Check(DeviceRuntime.Default, p, tile), Is.Null, $"D{d}");
        }
    }

    /// <summary>
    /// The flattened staging walk: several listed blocks per query block, each staged in several KV sub-tiles with a partial last
    /// one, the sequence's short last key block listed (fewer sub-tiles), full and partial blocks, an empty list (query block 1
    /// of the first mask plane) — so the double buffer is reused across block boundaries and the prefetch runs past the end of
    /// a block. Asynchronous (the default) and element staging must give the same bits.
    /// </summary>
    public static IEnumerable<TestCaseData> StagingSpecs()
    {
        Spec[] specs =
        [
            new("fp16 D 32, blocks 16x40 in sub-tiles 16+16+8, last key block 10", false, 1, 30, 90, 2, 1, 32, 32, 16, 40, 2, 1, new BlockSparseTiling(16, 16), Seed: 111),
            new("bf16 D 64, blocks 16x80 in sub-tiles 64+16, last key block 10", true, 1, 20, 170, 1, 1, 64, 64, 16, 80, 1, 1, Seed: 112),
            new("fp16 D 128, GQA, blocks 16x48 in sub-tiles 32+16, last key block 4", false, 1, 18, 100, 2, 1, 128, 128, 16, 48, 1, 1, new BlockSparseTiling(16, 32), Seed: 113),
        ];
        return specs.Select(s => new TestCaseData(s).SetName($"{{m}}({s.Name})"));
    }

    [TestCaseSource(nameof(StagingSpecs))]
    public void BothKvStagingsAgreeAcrossBlocksAndSubTiles(Spec spec)
    {
        var c = StagingCase(spec);
        using var mask = c.Mask();
        AssertRegisterPath(c, mask, spec.BFloat16, c.Options());
        var p = ProblemValidator.ValidateBlockSparse(c.Shape, mask, c.Options(), spec.BFloat16 ? ElementType.BFloat16 : ElementType.Float16).ToParams();
        var tile = BlockSparseTensorCore.Tile(p, spec.Tiling?.Queries, spec.Tiling?.Keys);
        Assert.That(BlockSparseRegisterTile.StepsPerBlock(p, tile.Keys), Is.GreaterThanOrEqualTo(2), "several KV sub-tiles per key block");
        Assert.That(p.KeyBlock % tile.Keys, Is.Not.Zero, "the last sub-tile of a block is partial");
        Assert.That(p.KeyTokens % p.KeyBlock, Is.Not.Zero, "the last key block is short");
        Assert.That(mask.GetKeyBlocks(0, 0, 0).Select(b => b.Index), Is.EqualTo(Enumerable.Range(0, p.KeyBlocks)), "query block 0 lists every key block");
        Assert.That(mask.GetKeyBlocks(0, 0, 0).Select(b => b.Kind), Does.Contain(BlockKind.Full).And.Contain(BlockKind.Partial));
        Assert.That(mask.GetKeyBlocks(0, 0, 1), Is.Empty, "query block 1 lists no key block");
        Assert.That(BlockSparseTensorCore.Staging(DeviceRuntime.Default, p, tile), Is.EqualTo(KvStagingKind.Async), "double buffering fits");

        (float[] Output, float[] Lse) async, elements;
        using (KvStaging.Use(KvStagingKind.Async))
        {
            async = RunHost(c, mask, spec.BFloat16, c.Options());
        }

        using (KvStaging.Use(KvStagingKind.Elements))
        {
            elements = RunHost(c, mask, spec.BFloat16, c.Options());
        }

        AssertRule(c, spec.BFloat16, async.Output, async.Lse, null);
        Assert.That(elements.Output, Is.EqualTo(async.Output).AsCollection, "element staging = cp.async staging (output)");
        Assert.That(elements.Lse, Is.EqualTo(async.Lse).AsCollection, "element staging = cp.async staging (LSE)");
    }

    /// <summary>
    /// A K or V view whose start is not 16-byte aligned (a sub-view at an odd element offset) cannot be read by 16-byte copies: the
    /// launcher stages it element by element; at a 16-byte offset it keeps <c>cp.async</c>. Both give the bits of the span path.
    /// </summary>
    [TestCase(1, false)]
    [TestCase(3, false)]
    [TestCase(8, true)]
    public void UnalignedKeyValueViewsFallBackToElementStaging(int viewOffset, bool expectAsync)
    {
        var expected = expectAsync ? KvStagingKind.Async : KvStagingKind.Elements;
        var spec = StagingSpecs().Select(d => (Spec)d.Arguments[0]!).First();
        var c = StagingCase(spec);
        using var mask = c.Mask();
        var device = DeviceRuntime.Default;
        var problem = ProblemValidator.ValidateBlockSparse(c.Shape, mask, c.Options(), ElementType.Float16);
        var p = problem.ToParams();
        var tile = FusedBlockSparseBackend.TensorCoreTile(device, problem);
        Assert.That(tile, Is.Not.Null, "this problem must take the tensor-core path");
        Assert.That(BlockSparseTensorCore.UsesRegisterKernel(p), Is.True);

        static ushort[] Bits(float[] x) => [.. x.Select(v => BitConverter.HalfToUInt16Bits((Half)v))];
        var (q, k, v) = (Bits(c.Data.Query), Bits(c.Data.Key), Bits(c.Data.Value));
        var accelerator = device.Accelerator;
        using var tq = accelerator.Allocate1D(q);
        ushort[] Padded(ushort[] x) => [.. Enumerable.Repeat((ushort)0x7BFF, viewOffset), .. x];
        using var tk = accelerator.Allocate1D(Padded(k));
        using var tv = accelerator.Allocate1D(Padded(v));
        using var output = accelerator.Allocate1D<ushort>(c.Data.OutputLength);
        using var lse = accelerator.Allocate1D<float>(c.Data.LseLength);
        var (kView, vView) = (tk.View.SubView(viewOffset, k.Length), tv.View.SubView(viewOffset, v.Length));
        Assert.That(BlockSparseTensorCore.Staging(device, p, tile!.Value, kView, vView), Is.EqualTo(expected), "the launcher's KV staging");
        Assert.That(BlockSparseTensorCore.Staging(device, p, tile.Value, tk.View.SubView(0, k.Length), tv.View.SubView(0, v.Length)), Is.EqualTo(KvStagingKind.Async));

        var lists = mask.OnDevice(device);
        BlockSparseDispatch.Run(
            lists.ElementMask, BlockSparseDispatch.NoBias,
            new BlockSparseTensorCorePass<Fp16Format>(device, accelerator.DefaultStream, p, tile.Value, lists.Forward, tq.View, kView, vView, output.View, lse.View));
        accelerator.Synchronize();
        var actual = output.GetAsArray1D().Select(b => (float)BitConverter.UInt16BitsToHalf(b)).ToArray();
        var actualLse = lse.GetAsArray1D();

        AssertRule(c, false, actual, actualLse, null);
        var (hostOutput, hostLse) = RunHost(c, mask, false, c.Options());
        Assert.That(actual, Is.EqualTo(hostOutput).AsCollection, "offset views = span path (output)");
        Assert.That(actualLse, Is.EqualTo(hostLse).AsCollection, "offset views = span path (LSE)");
    }

    /// <summary>
    /// <see cref="Case"/> with the first mask plane's query block 0 listing every key block — the first full, the others partial —
    /// and its query block 1 listing none (its rows see no key).
    /// </summary>
    private static RandomMaskCase StagingCase(Spec spec)
    {
        var c = Case(spec);
        var (nq, nk) = (spec.QueryTokens, spec.KeyTokens);
        for (var q = 0; q < Math.Min(2 * spec.QueryBlock, nq); q++)
        {
            for (var k = 0; k < nk; k++)
            {
                c.Dense[((long)q * nk) + k] = q < spec.QueryBlock && (k < spec.KeyBlock || ((q * 31) + (k * 17)) % 3 != 0);
            }
        }

        return c;
    }

    private static void AssertRegisterPath(RandomMaskCase c, BlockMask mask, bool bfloat16, BlockSparseOptions options)
    {
        AssertTensorCorePath(c, mask, bfloat16, options);
        var problem = ProblemValidator.ValidateBlockSparse(c.Shape, mask, options, bfloat16 ? ElementType.BFloat16 : ElementType.Float16);
        Assert.That(BlockSparseTensorCore.UsesRegisterKernel(problem.ToParams()), Is.True, "this problem must take the register-resident kernel");
    }
}
