using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Cuda;
using Natten.Kernels.Runtime;
using Natten.Reference;
using Natten.Tests.Support;
using Natten.Validation;

namespace Natten.Tests.Kernels;

/// <summary>
/// The opt-in TF32 forward (<see cref="NeighborhoodAttentionOptions.AllowTf32"/>): TF32 rounding against an
/// independent definition, the m16n8k8 fragment layout against a plain matrix product (mma.sync on CUDA,
/// the lane-exact emulation elsewhere), the kernel against the Reference by FlashAttention's rule on
/// TF32-rounded inputs, and that the option is off by default and falls back where the kernel cannot run.
/// </summary>
[TestFixtureSource(nameof(Accelerators))]
public sealed class Tf32Tests(AcceleratorKind kind)
{
    /// <summary>
    /// Floor for the TF32 path: P is rounded to TF32 before P·V (half an ulp at 1 is 2^-11 ≈ 4.9e-4 relative per
    /// weight), which the plain float32 baseline does not do.
    /// </summary>
    private const double Tf32Floor = 5e-4;

    public static IEnumerable<AcceleratorKind> Accelerators => [AcceleratorKind.Cpu, AcceleratorKind.Cuda];

    public static IEnumerable<TestCaseData> Problems()
    {
        // (spatial, kernel, stride, dilation, causal, heads, kvHeads, D, Dv, additional, query tile, KV tile)
        yield return Case("1D one warp, masked edges", [40], [7], [1], [1], [false], 2, 1, 16, 16, 0, [16], [16]);
        yield return Case("1D causal, dilation, Dv 8", [45], [5], [1], [2], [true], 1, 1, 8, 8, 0, [32], [8]);
        yield return Case("1D stride, additional tokens", [37], [8], [4], [1], [false], 1, 1, 16, 24, 5, [16], [24]);
        yield return Case("2D causal x dilation, GQA", [10, 8], [3, 4], [1, 2], [2, 1], [true, false], 4, 2, 8, 16, 0, [2, 8], [2, 4]);
        yield return Case("3D", [4, 5, 6], [2, 3, 3], [1, 1, 2], [1, 1, 1], [false, true, false], 1, 1, 16, 8, 2, [2, 2, 4], [2, 2, 2]);
        yield return Case("2D default tiles, D 32", [6, 6], [3, 3], [1, 1], [1, 1], [false, false], 1, 1, 32, 32, 0, null, null);
    }

    [SetUp]
    public void RequireDevice()
    {
        if (!AttentionDevice.IsAvailable(kind))
        {
            Assert.Ignore($"No {kind} accelerator on this machine.");
        }
    }

    [TestCase(1f, 1f)]
    [TestCase(1f + (1f / 4096), 1f)] // below half an ulp (2^-11): down
    [TestCase(1f + (1f / 2048), 1f + (1f / 1024))] // exactly half an ulp: ties away from zero (to even would give 1)
    [TestCase(-(1f + (1f / 2048)), -(1f + (1f / 1024)))]
    [TestCase(1f + (3f / 2048), 1f + (2f / 1024))] // 1.5 ulp: up
    [TestCase(float.MaxValue, float.PositiveInfinity)]
    [TestCase(float.PositiveInfinity, float.PositiveInfinity)]
    [TestCase(float.NegativeInfinity, float.NegativeInfinity)]
    [TestCase(0f, 0f)]
    public void RoundingMatchesTheDefinition(float input, float expected)
        => Assert.That(Tf32.Round(input), Is.EqualTo(expected));

    [Test]
    public void RoundingAgreesWithAnIndependentDefinitionOnRandomValues()
    {
        var rng = new Random(3);
        for (var i = 0; i < 100_000; i++)
        {
            var x = (float)((rng.NextDouble() - 0.5) * Math.Pow(2, rng.Next(-30, 30)));
            Assert.That(Tf32.Round(x), Is.EqualTo(RoundIndependently(x)), $"x = {x:R}");
        }

        for (var i = 0; i < 10_000; i++)
        {
            var subnormal = BitConverter.Int32BitsToSingle(rng.Next(1, 0x007FFFFF) | (rng.Next(2) << 31));
            Assert.That(Tf32.Round(subnormal), Is.EqualTo(RoundIndependently(subnormal)), $"subnormal {subnormal:R}");
        }

        Assert.That(float.IsNaN(Tf32.Round(float.NaN)));
    }

    [Test]
    public void FragmentLayoutMatchesAPlainMatrixProduct()
    {
        // A 16×16, B 16×8 (k = 16: two m16n8k8 steps), rounded to TF32 first.
        var rng = new Random(11);
        var a = Enumerable.Range(0, 16 * 16).Select(_ => RoundIndependently((float)((rng.NextDouble() * 2) - 1))).ToArray();
        var b = Enumerable.Range(0, 16 * 8).Select(_ => RoundIndependently((float)((rng.NextDouble() * 2) - 1))).ToArray();
        var device = DeviceRuntime.Get(kind);
        using var aBuffer = device.Accelerator.Allocate1D(a);
        using var bBuffer = device.Accelerator.Allocate1D(b);
        using var ntBuffer = device.Accelerator.Allocate1D<float>(16 * 8);
        using var nnBuffer = device.Accelerator.Allocate1D<float>(16 * 8);
        var launch = device.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>(Tf32FragmentKernels.Products);
        launch(new KernelConfig(1, 32), aBuffer.View, bBuffer.View, ntBuffer.View, nnBuffer.View);
        device.Accelerator.Synchronize();
        var nt = ntBuffer.GetAsArray1D();
        var nn = nnBuffer.GetAsArray1D();

        for (var r = 0; r < 16; r++)
        {
            for (var n = 0; n < 8; n++)
            {
                double productNN = 0, productNT = 0;
                for (var k = 0; k < 16; k++)
                {
                    productNN += a[(r * 16) + k] * (double)b[(k * 8) + n];
                    productNT += a[(r * 16) + k] * (double)b[(k * 8) + n];
                }

                Assert.That(nn[(r * 8) + n], Is.EqualTo(productNN).Within(1e-5), $"NN C[{r}, {n}]");
                Assert.That(nt[(r * 8) + n], Is.EqualTo(productNT).Within(1e-5), $"NT C[{r}, {n}]");
            }
        }
    }

    [TestCaseSource(nameof(Problems))]
    public void Tf32ForwardFollowsTheToleranceRule(NeighborhoodProblem reference, FusedTiles? tiles)
    {
        var (shape, options) = Describe(reference, tiles, allowTf32: true);
        var device = DeviceRuntime.Get(kind);
        var problem = ProblemValidator.Validate(shape, options, ElementType.Float32);
        Assert.That(
            Natten.Backends.FusedBackend.Tf32Tile(device, problem, Natten.Backends.NaiveBackend.ToParams(problem)), Is.Not.Null,
            "this problem must take the TF32 path");

        var (q, k, v, ak, av) = Inputs(reference);
        var (output, lse) = Run(shape, options, q, k, v, ak, av);

        // The Reference and the plain float32 baseline on the TF32-rounded inputs the kernel multiplies.
        var (rq, rk, rv, rak, rav) = (RoundAll(q), RoundAll(k), RoundAll(v), RoundAll(ak), RoundAll(av));
        var extra = ak.Length > 0;
        var expected = ReferenceAttention.Neighborhood(
            reference, TestData.ToDouble(rq), TestData.ToDouble(rk), TestData.ToDouble(rv),
            extra ? TestData.ToDouble(rak) : null, extra ? TestData.ToDouble(rav) : null);
        var plain = PlainAttention.Forward(reference, rq, rk, rv, rak, rav);
        Tolerance.AssertRule(expected.Output, output, plain.Output, Tf32Floor, "output");
        Tolerance.AssertRule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, "lse");
    }

    [Test]
    public void OffByDefaultAndDifferentWhenOn()
    {
        var reference = (NeighborhoodProblem)Problems().First().Arguments[0]!;
        var tiles = (FusedTiles?)Problems().First().Arguments[1];
        var (q, k, v, ak, av) = Inputs(reference);
        var (shape, defaults) = Describe(reference, tiles, allowTf32: false);
        Assert.That(defaults.AllowTf32, Is.False, "TF32 is opt-in");
        var (float32, _) = Run(shape, defaults, q, k, v, ak, av);
        var (tf32, _) = Run(shape, defaults with { AllowTf32 = true }, q, k, v, ak, av);
        var expected = ReferenceAttention.Neighborhood(reference, TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v), null, null);

        var float32Error = TestData.MaxAbsDiff(expected.Output, float32);
        var tf32Error = TestData.MaxAbsDiff(expected.Output, tf32);
        Assert.That(float32Error, Is.LessThanOrEqualTo(Tolerance.Float32), "the default stays float32-accurate");
        Assert.That(tf32Error, Is.GreaterThan(10 * float32Error), "the option switches to TF32 products (coarser than float32)");
    }

    [Test]
    public void FallsBackToFloat32WhereTheKernelCannotRun()
    {
        // D = 12 is not a multiple of 8: AllowTf32 is a permission, not a requirement.
        var reference = new NeighborhoodProblem
        {
            Batch = 1, Spatial = [20], Heads = 1, KvHeads = 1, HeadDim = 12, ValueDim = 12, KernelSize = [5],
            Stride = [1], Dilation = [1], Causal = [false], AdditionalTokens = 0,
        };
        var (shape, options) = Describe(reference, null, allowTf32: true);
        var problem = ProblemValidator.Validate(shape, options, ElementType.Float32);
        Assert.That(Natten.Backends.FusedBackend.Tf32Tile(DeviceRuntime.Get(kind), problem, Natten.Backends.NaiveBackend.ToParams(problem)), Is.Null);

        var (q, k, v, ak, av) = Inputs(reference);
        var (withOption, _) = Run(shape, options, q, k, v, ak, av);
        var (without, _) = Run(shape, options with { AllowTf32 = false }, q, k, v, ak, av);
        Assert.That(withOption, Is.EqualTo(without), "the float32 kernel ran in both cases");
    }

    private (float[] Output, float[] Lse) Run(
        AttentionShape shape, NeighborhoodAttentionOptions options, float[] q, float[] k, float[] v, float[] ak, float[] av)
    {
        var attention = AttentionDevice.Get(kind);
        var outputLength = (int)(q.Length / shape.HeadDim * shape.ValueDim);
        using var tq = attention.Upload<float>(q, q.Length);
        using var tk = attention.Upload<float>(k, k.Length);
        using var tv = attention.Upload<float>(v, v.Length);
        using var tak = attention.Upload<float>(ak, ak.Length);
        using var tav = attention.Upload<float>(av, av.Length);
        using var output = attention.Allocate<float>(outputLength);
        using var lse = attention.Allocate<float>(q.Length / shape.HeadDim);
        NeighborhoodAttention.Forward(tq, tk, tv, tak, tav, shape, options, output, lse);
        return (output.ToArray(), lse.ToArray());
    }

    private static (float[] Q, float[] K, float[] V, float[] Ak, float[] Av) Inputs(NeighborhoodProblem reference)
    {
        var rng = new Random(reference.Tokens + reference.HeadDim);
        var rows = (long)reference.Batch * reference.Tokens;
        var extra = (long)reference.Batch * reference.AdditionalTokens;
        return (
            TestData.Floats(rng, rows * reference.Heads * reference.HeadDim),
            TestData.Floats(rng, rows * reference.KvHeads * reference.HeadDim),
            TestData.Floats(rng, rows * reference.KvHeads * reference.ValueDim),
            TestData.Floats(rng, extra * reference.KvHeads * reference.HeadDim),
            TestData.Floats(rng, extra * reference.KvHeads * reference.ValueDim));
    }

    private static (AttentionShape Shape, NeighborhoodAttentionOptions Options) Describe(NeighborhoodProblem reference, FusedTiles? tiles, bool allowTf32)
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
            AllowTf32 = allowTf32,
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

    private static float[] RoundAll(float[] data) => data.Select(RoundIndependently).ToArray();

    /// <summary>TF32 rounding from its definition, in double: keep 11 significant bits, ties away from zero.</summary>
    private static float RoundIndependently(float x)
    {
        if (!float.IsFinite(x) || x == 0)
        {
            return x;
        }

        var exponent = Math.Max(Math.ILogB((double)x), -126); // subnormals share the smallest normal exponent's spacing
        var ulp = Math.ScaleB(1.0, exponent - 10);
        var rounded = Math.Round(x / ulp, MidpointRounding.AwayFromZero) * ulp;
        return (float)rounded;
    }
}

/// <summary>Test kernels for the TF32 fragment layout (public: ILGPU's CPU accelerator calls them from a generated assembly).</summary>
public static class Tf32FragmentKernels
{
    /// <summary>One warp: C = A·B through ProductNN (B row-major 16×8) and through ProductNT (B transposed into shared memory).</summary>
    internal static void Products(ArrayView<float> a, ArrayView<float> b, ArrayView<float> nt, ArrayView<float> nn)
    {
        var scratch = SharedMemory.Allocate<uint>(TensorCore.ScratchWordsPerWarp);
        var bt = SharedMemory.Allocate<float>(8 * 16);
        var aShared = SharedMemory.Allocate<float>(16 * 16);
        var bShared = SharedMemory.Allocate<float>(16 * 8);
        var lane = Group.IdxX;
        for (var e = lane; e < 16 * 16; e += 32)
        {
            aShared[e] = a[e];
        }

        for (var e = lane; e < 16 * 8; e += 32)
        {
            bShared[e] = b[e];
            bt[((e % 8) * 16) + (e / 8)] = b[e];
        }

        Group.Barrier();
        var g = lane / 4;
        var t = lane % 4;
        float c0 = 0f, c1 = 0f, c2 = 0f, c3 = 0f;
        Tf32.ProductNN(aShared, 16, 0, bShared, 8, 0, 16, g, t, ref c0, ref c1, ref c2, ref c3, scratch);
        Store(nn, g, t, c0, c1, c2, c3);
        c0 = c1 = c2 = c3 = 0f;
        Tf32.ProductNT(aShared, 16, 0, bt, 16, 0, 16, g, t, ref c0, ref c1, ref c2, ref c3, scratch);
        Store(nt, g, t, c0, c1, c2, c3);
    }

    private static void Store(ArrayView<float> c, int g, int t, float c0, float c1, float c2, float c3)
    {
        c[(g * 8) + (2 * t)] = c0;
        c[(g * 8) + (2 * t) + 1] = c1;
        c[((g + 8) * 8) + (2 * t)] = c2;
        c[((g + 8) * 8) + (2 * t) + 1] = c3;
    }
}
