using Natten.BlockSparse;
using Natten.Kernels.BlockSparse;
using Natten.Kernels.BlockSparse.Generated;
using Natten.Kernels.Cuda;
using Natten.Kernels.Runtime;
using Natten.Tests.Support;
using Natten.Validation;
using static Natten.Tests.BlockSparse.BlockSparseTensorCoreTests;

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
        var device = AttentionDevice.Default;
        float[] output;
        float[] lse;
        if (bfloat16)
        {
            var (q, k, v) = (Bf16(c.Data.Query), Bf16(c.Data.Key), Bf16(c.Data.Value));
            using var dq = device.Upload<ushort>(q, q.Length);
            using var dk = device.Upload<ushort>(k, k.Length);
            using var dv = device.Upload<ushort>(v, v.Length);
            using var o = device.Allocate<ushort>((int)c.Data.OutputLength);
            using var l = device.Allocate<float>((int)c.Data.LseLength);
            BlockSparseAttention.ForwardBFloat16(dq, dk, dv, mask, c.Shape, c.Options(), o, l);
            (output, lse) = (WidenBf16(o.ToArray()), l.ToArray());
        }
        else
        {
            var (q, k, v) = (ToHalf(c.Data.Query), ToHalf(c.Data.Key), ToHalf(c.Data.Value));
            using var dq = device.Upload<Half>(q, q.Length);
            using var dk = device.Upload<Half>(k, k.Length);
            using var dv = device.Upload<Half>(v, v.Length);
            using var o = device.Allocate<Half>((int)c.Data.OutputLength);
            using var l = device.Allocate<float>((int)c.Data.LseLength);
            BlockSparseAttention.Forward(dq, dk, dv, mask, c.Shape, c.Options(), o, l);
            (output, lse) = (FromHalf(o.ToArray()), l.ToArray());
        }

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
            if (expectRegister)
            {
                Assert.That(BlockSparseTensorCore.SharedBytes(p, tile), Is.EqualTo(registerBytes), "register kernel: scratch + padded Q, K, V");
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

    private static void AssertRegisterPath(RandomMaskCase c, BlockMask mask, bool bfloat16, BlockSparseOptions options)
    {
        AssertTensorCorePath(c, mask, bfloat16, options);
        var problem = ProblemValidator.ValidateBlockSparse(c.Shape, mask, options, bfloat16 ? ElementType.BFloat16 : ElementType.Float16);
        Assert.That(BlockSparseTensorCore.UsesRegisterKernel(problem.ToParams()), Is.True, "this problem must take the register-resident kernel");
    }
}
