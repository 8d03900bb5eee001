using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Cuda;
using Natten.Kernels.Runtime;
using Natten.Reference;
using Natten.Tests.Support;
using Natten.Validation;
using Half = System.Half;

namespace Natten.Tests.Kernels;

/// <summary>
/// The tensor-core path: the m16n8k16 fragment layout (through <c>mma.sync</c> on CUDA, through the
/// lane-exact emulation elsewhere) against a plain matrix product, and the tensor-core FNA kernel
/// against the Reference by FlashAttention's rule with half-precision inputs.
/// </summary>
[TestFixtureSource(nameof(Accelerators))]
public sealed class TensorCoreTests(AcceleratorKind kind)
{
    public static IEnumerable<AcceleratorKind> Accelerators => [AcceleratorKind.Cpu, AcceleratorKind.Cuda];

    public static IEnumerable<TestCaseData> Problems()
    {
        // (spatial, kernel, stride, dilation, causal, heads, kvHeads, D, Dv, additional, query tile, KV tile)
        yield return Case("1D one warp", [40], [7], [1], [1], [false], 2, 1, 16, 16, 0, [16], [16]);
        yield return Case("1D two warps, causal, dilation", [45], [5], [1], [2], [true], 2, 2, 32, 8, 0, [32], [16]);
        yield return Case("1D stride, additional tokens", [37], [8], [4], [1], [false], 1, 1, 16, 24, 5, [16], [32]);
        yield return Case("2D", [9, 11], [5, 3], [1, 1], [1, 1], [false, false], 2, 1, 16, 16, 0, [4, 4], [4, 4]);
        yield return Case("2D causal x dilation, GQA", [10, 8], [3, 4], [1, 2], [2, 1], [true, false], 4, 2, 32, 16, 0, [2, 8], [2, 8]);
        yield return Case("2D blocked (stride = kernel)", [12, 12], [4, 4], [4, 4], [1, 1], [false, false], 1, 1, 16, 8, 0, [4, 4], [4, 4]);
        yield return Case("3D", [4, 5, 6], [2, 3, 3], [1, 1, 2], [1, 1, 1], [false, true, false], 2, 2, 16, 16, 2, [2, 2, 4], [2, 2, 4]);
        yield return Case("3D default tiles, D 64", [4, 6, 6], [3, 3, 3], [1, 1, 1], [1, 1, 1], [false, false, false], 1, 1, 64, 64, 0, null, null);
        yield return Case("1D D 256 (version-1 kernel)", [20], [5], [1], [1], [false], 1, 1, 256, 256, 0, [16], [16]);
        yield return Case("1D D 32 default tiles", [40], [9], [1], [1], [true], 2, 1, 32, 32, 3, null, null);
    }

    [SetUp]
    public void RequireDevice()
    {
        if (!AttentionDevice.IsAvailable(kind))
        {
            Assert.Ignore($"No {kind} accelerator on this machine.");
        }
    }

    [Test]
    public void FragmentLayoutMatchesAPlainMatrixProduct([Values] bool bfloat16)
    {
        var rng = new Random(7);
        var a = Enumerable.Range(0, 16 * 16).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        var b = Enumerable.Range(0, 16 * 8).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        ushort Bits(float x) => bfloat16 ? Bf16Bits(x) : BitConverter.HalfToUInt16Bits((Half)x);
        float Value(ushort bits) => bfloat16 ? BitConverter.Int32BitsToSingle(bits << 16) : (float)BitConverter.UInt16BitsToHalf(bits);
        var aBits = a.Select(Bits).ToArray();
        var bBits = b.Select(Bits).ToArray();

        var device = DeviceRuntime.Get(kind);
        using var aBuffer = device.Accelerator.Allocate1D(aBits);
        using var bBuffer = device.Accelerator.Allocate1D(bBits);
        using var cBuffer = device.Accelerator.Allocate1D<float>(16 * 8);
        var launch = bfloat16
            ? device.Accelerator.LoadStreamKernel<ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>>(FragmentKernels.Product<Bf16Format>)
            : device.Accelerator.LoadStreamKernel<ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>>(FragmentKernels.Product<Fp16Format>);
        launch(new KernelConfig(1, 32), aBuffer.View, bBuffer.View, cBuffer.View);
        device.Accelerator.Synchronize();
        var c = cBuffer.GetAsArray1D();

        for (var r = 0; r < 16; r++)
        {
            for (var n = 0; n < 8; n++)
            {
                var expected = 0.0;
                for (var k = 0; k < 16; k++)
                {
                    expected += Value(aBits[(r * 16) + k]) * (double)Value(bBits[(k * 8) + n]);
                }

                Assert.That(c[(r * 8) + n], Is.EqualTo(expected).Within(1e-5), $"C[{r}, {n}]");
            }
        }
    }

    [TestCaseSource(nameof(Problems))]
    public void TensorCoreForwardFollowsTheToleranceRule(NeighborhoodProblem reference, FusedTiles? tiles)
    {
        var (shape, options) = Describe(reference, tiles);
        var device = DeviceRuntime.Get(kind);
        var problem = ProblemValidator.Validate(shape, options, ElementType.Float16);
        Assert.That(
            Natten.Backends.FusedBackend.TensorCoreTile(device, problem, Natten.Backends.NaiveBackend.ToParams(problem)), Is.Not.Null,
            "this problem must take the tensor-core path");

        var rng = new Random(reference.Tokens);
        var rows = (long)reference.Batch * reference.Tokens;
        var extra = (long)reference.Batch * reference.AdditionalTokens;
        var q = Round(TestData.Floats(rng, rows * reference.Heads * reference.HeadDim));
        var k = Round(TestData.Floats(rng, rows * reference.KvHeads * reference.HeadDim));
        var v = Round(TestData.Floats(rng, rows * reference.KvHeads * reference.ValueDim));
        var ak = Round(TestData.Floats(rng, extra * reference.KvHeads * reference.HeadDim));
        var av = Round(TestData.Floats(rng, extra * reference.KvHeads * reference.ValueDim));

        var attention = AttentionDevice.Get(kind);
        using var tq = attention.Upload<Half>(ToHalf(q), q.Length);
        using var tk = attention.Upload<Half>(ToHalf(k), k.Length);
        using var tv = attention.Upload<Half>(ToHalf(v), v.Length);
        using var tak = attention.Upload<Half>(ToHalf(ak), ak.Length);
        using var tav = attention.Upload<Half>(ToHalf(av), av.Length);
        using var output = attention.Allocate<Half>((int)(rows * reference.Heads * reference.ValueDim));
        using var lse = attention.Allocate<float>((int)(rows * reference.Heads));
        NeighborhoodAttention.Forward(tq, tk, tv, tak, tav, shape, options, output, lse);

        var expected = ReferenceAttention.Neighborhood(
            reference, TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v),
            extra > 0 ? TestData.ToDouble(ak) : null, extra > 0 ? TestData.ToDouble(av) : null);
        var plain = PlainAttention.Forward(reference, q, k, v, ak, av);

        // The plain baseline rounds its output to half, like the kernel; the kernel also rounds P to half
        // before P·V (FlashAttention-2), which the floor of the half-precision rule covers.
        Tolerance.AssertRule(expected.Output, output.ToArray().Select(h => (float)h).ToArray(), Round(plain.Output), Tolerance.Float16Floor, "output");
        Tolerance.AssertRule(expected.LogSumExp, lse.ToArray(), plain.Lse, Tolerance.Float32Floor, "lse");
    }

    [TestCaseSource(nameof(Problems))]
    public void TensorCoreBackwardMatchesReference(NeighborhoodProblem reference, FusedTiles? tiles)
    {
        var (shape, options) = Describe(reference, tiles);
        var device = DeviceRuntime.Get(kind);
        var problem = ProblemValidator.Validate(shape, options, ElementType.Float16);
        var p = Natten.Backends.NaiveBackend.ToParams(problem);
        var tile = Natten.Backends.FusedBackend.TensorCoreTile(device, problem, p);
        Assert.That(tile, Is.Not.Null);
        var why = Natten.Kernels.Fused.FnaTensorCoreBackward.Check(device, p, tile!.Value);
        if (reference.ValueDim % 16 == 0)
        {
            Assert.That(why, Is.Null, "this problem must take the tensor-core backward");
        }
        else
        {
            // dP = dO·Vᵀ contracts over Dv: such problems take the float32-math backward, which must be right too.
            Assert.That(why, Does.Contain("Dv % 16"));
        }

        var rng = new Random(reference.Tokens + 1);
        var rows = (long)reference.Batch * reference.Tokens;
        var extra = (long)reference.Batch * reference.AdditionalTokens;
        var q = ToHalf(TestData.Floats(rng, rows * reference.Heads * reference.HeadDim));
        var k = ToHalf(TestData.Floats(rng, rows * reference.KvHeads * reference.HeadDim));
        var v = ToHalf(TestData.Floats(rng, rows * reference.KvHeads * reference.ValueDim));
        var ak = ToHalf(TestData.Floats(rng, extra * reference.KvHeads * reference.HeadDim));
        var av = ToHalf(TestData.Floats(rng, extra * reference.KvHeads * reference.ValueDim));
        var dO = ToHalf(TestData.Floats(rng, rows * reference.Heads * reference.ValueDim));

        var attention = AttentionDevice.Get(kind);
        using var tq = attention.Upload<Half>(q, q.Length);
        using var tk = attention.Upload<Half>(k, k.Length);
        using var tv = attention.Upload<Half>(v, v.Length);
        using var tak = extra > 0 ? attention.Upload<Half>(ak, ak.Length) : null;
        using var tav = extra > 0 ? attention.Upload<Half>(av, av.Length) : null;
        using var tdO = attention.Upload<Half>(dO, dO.Length);
        using var output = attention.Allocate<Half>(dO.Length);
        using var lse = attention.Allocate<float>((int)(rows * reference.Heads));
        if (extra > 0)
        {
            NeighborhoodAttention.Forward(tq, tk, tv, tak!, tav!, shape, options, output, lse);
        }
        else
        {
            NeighborhoodAttention.Forward(tq, tk, tv, shape, options, output, lse);
        }

        using var dq = attention.Allocate<Half>(q.Length);
        using var dk = attention.Allocate<Half>(k.Length);
        using var dv = attention.Allocate<Half>(v.Length);
        using var dak = extra > 0 ? attention.Allocate<Half>(ak.Length) : null;
        using var dav = extra > 0 ? attention.Allocate<Half>(av.Length) : null;
        NeighborhoodAttention.Backward(tq, tk, tv, output, lse, tdO, shape, options, dq, dk, dv, tak, tav, dak, dav);

        double[] D(Half[] x) => x.Select(h => (double)h).ToArray();
        var expected = ReferenceAttention.NeighborhoodBackward(reference, D(q), D(k), D(v), D(dO), extra > 0 ? D(ak) : null, extra > 0 ? D(av) : null);
        float[] F(DeviceTensor<Half> x) => x.ToArray().Select(h => (float)h).ToArray();
        Assert.That(TestData.MaxAbsDiff(expected.Query, F(dq)), Is.LessThanOrEqualTo(Tolerance.Float16Gradient), "dQ");
        Assert.That(TestData.MaxAbsDiff(expected.Key, F(dk)), Is.LessThanOrEqualTo(Tolerance.Float16Gradient), "dK");
        Assert.That(TestData.MaxAbsDiff(expected.Value, F(dv)), Is.LessThanOrEqualTo(Tolerance.Float16Gradient), "dV");
        if (extra > 0)
        {
            Assert.That(TestData.MaxAbsDiff(expected.AdditionalKey, F(dak!)), Is.LessThanOrEqualTo(Tolerance.Float16Gradient), "d(additional K)");
            Assert.That(TestData.MaxAbsDiff(expected.AdditionalValue, F(dav!)), Is.LessThanOrEqualTo(Tolerance.Float16Gradient), "d(additional V)");
        }
    }

    internal static (AttentionShape Shape, NeighborhoodAttentionOptions Options) Describe(NeighborhoodProblem reference, FusedTiles? tiles)
    {
        var shape = new AttentionShape(reference.Batch, AxisValues.PerAxis(reference.Spatial), reference.Heads, reference.HeadDim)
        {
            KvHeads = reference.KvHeads,
            ValueDim = reference.ValueDim,
            AdditionalTokens = reference.AdditionalTokens,
        };
        var causal = reference.Rank switch
        {
            1 => new AxisFlags(reference.Causal[0]),
            2 => new AxisFlags(reference.Causal[0], reference.Causal[1]),
            _ => new AxisFlags(reference.Causal[0], reference.Causal[1], reference.Causal[2]),
        };
        var options = new NeighborhoodAttentionOptions(AxisValues.PerAxis(reference.KernelSize))
        {
            Stride = AxisValues.PerAxis(reference.Stride),
            Dilation = AxisValues.PerAxis(reference.Dilation),
            Causal = causal,
            Backend = "fused",
            Tiles = tiles,
        };
        return (shape, options);
    }

    private static TestCaseData Case(
        string name, int[] spatial, int[] kernel, int[] stride, int[] dilation, bool[] causal, int heads, int kvHeads, int d, int dv, int additional,
        int[]? queryTile, int[]? keyTile)
    {
        var problem = new NeighborhoodProblem
        {
            Batch = 1, Spatial = spatial, Heads = heads, KvHeads = kvHeads, HeadDim = d, ValueDim = dv, KernelSize = kernel,
            Stride = stride, Dilation = dilation, Causal = causal, AdditionalTokens = additional,
        };
        FusedTiles? tiles = queryTile is null ? null : new FusedTiles(AxisValues.PerAxis(queryTile), AxisValues.PerAxis(keyTile!));
        return new TestCaseData(problem, tiles).SetName($"{{m}}({name})");
    }

    private static float[] Round(float[] data) => data.Select(x => (float)(Half)x).ToArray();

    private static Half[] ToHalf(float[] data) => data.Select(x => (Half)x).ToArray();

    private static ushort Bf16Bits(float x)
    {
        var bits = (uint)BitConverter.SingleToInt32Bits(x);
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }
}

/// <summary>Test kernels for the fragment layout (public: ILGPU's CPU accelerator calls them from a generated assembly).</summary>
public static class FragmentKernels
{
    /// <summary>One warp: builds the A (16×16 row-major) and B (16×8 row-major) fragments per the PTX layout, multiplies, stores C.</summary>
    internal static void Product<TFormat>(ArrayView<ushort> a, ArrayView<ushort> b, ArrayView<float> c)
        where TFormat : struct, IHalfFormat
    {
        var scratch = SharedMemory.Allocate<uint>(TensorCore.ScratchWordsPerWarp);
        var lane = Group.IdxX;
        var g = lane / 4;
        var t = lane % 4;
        float c0 = 0f, c1 = 0f, c2 = 0f, c3 = 0f;
        TFormat.Mma(
            RowPair(a, g, 2 * t), RowPair(a, g + 8, 2 * t), RowPair(a, g, (2 * t) + 8), RowPair(a, g + 8, (2 * t) + 8),
            ColumnPair(b, 2 * t, g), ColumnPair(b, (2 * t) + 8, g), ref c0, ref c1, ref c2, ref c3, scratch);
        c[(g * 8) + (2 * t)] = c0;
        c[(g * 8) + (2 * t) + 1] = c1;
        c[((g + 8) * 8) + (2 * t)] = c2;
        c[((g + 8) * 8) + (2 * t) + 1] = c3;
    }

    /// <summary>A[row, col] and A[row, col + 1] of the 16×16 row-major A.</summary>
    private static uint RowPair(ArrayView<ushort> a, int row, int col) => TensorCore.Pack(a[(row * 16) + col], a[(row * 16) + col + 1]);

    /// <summary>B[k, col] and B[k + 1, col] of the 16×8 row-major B.</summary>
    private static uint ColumnPair(ArrayView<ushort> b, int k, int col) => TensorCore.Pack(b[(k * 8) + col], b[((k + 1) * 8) + col]);
}
