using ILGPU;
using ILGPU.Runtime;
using Natten.Backends;
using Natten.Kernels.Common;
using Natten.Kernels.Cuda;
using Natten.Kernels.Fused;
using Natten.Kernels.Runtime;
using Natten.Reference;
using Natten.Tests.Support;
using Natten.Validation;
using Half = System.Half;

namespace Natten.Tests.Kernels;

/// <summary>
/// The tensor-core backward with the generated register-resident dQ and dK/dV kernels (D = Dv = 32, 64 and 128, fp16 and
/// bf16, fragments through ldmatrix and on a subset through element loads; the additional tokens' dK/dV from the
/// float32-math kernel) against the double Reference gradients. On the CPU accelerator the fragments go through the
/// lane-exact mma emulation and ldmatrix's lane-by-lane model, so these run the generated kernels' own fragment,
/// masking and dS code.
/// Shapes are tiny: the emulation costs two group barriers per mma.
/// </summary>
[TestFixtureSource(nameof(Accelerators))]
public sealed class RegisterTensorCoreBackwardTests(AcceleratorKind kind)
{
    public static IEnumerable<AcceleratorKind> Accelerators => [AcceleratorKind.Cpu, AcceleratorKind.Cuda];

    public static IEnumerable<TestCaseData> Problems()
    {
        foreach (var d in new[] { 32, 64, 128 })
        {
            foreach (var bf16 in new[] { false, true })
            {
                var format = bf16 ? "bf16" : "fp16";

                // (spatial, kernel, stride, dilation, causal, heads, kvHeads, additional, query tile, KV tile)
                yield return Case($"D{d}_{format}_1D_inside_and_edge_subtiles_GQA", d, bf16, RegisterTensorCoreTests.Visits.Masked | RegisterTensorCoreTests.Visits.Unmasked,
                    [40], [25], [1], [1], [false], 2, 1, 0, [16], [16]);
                // 21 additional tokens with 16-key sub-tiles: one full sub-tile (no-mask path) and a partial one (5 keys).
                yield return Case($"D{d}_{format}_1D_causal_dilation_additional", d, bf16, RegisterTensorCoreTests.Visits.Masked,
                    [33], [5], [1], [2], [true], 1, 1, 21, [16], [16]);
                if (!(bf16 && d == 32))
                {
                    // D32 bf16 is judged by FlashAttention's rule in Bfloat16GradientsFollowTheToleranceRule: its exact dV
                    // reaches −1.2312, between the bf16 values −1.2266 and −1.2344, so rounding alone costs 3.2e-3 of the
                    // absolute 4e-3 bound (measured: kernel −1.2266, error 4.6e-3; P rounded to bf16 moves the f32 sum by 7e-4).
                    yield return Case($"D{d}_{format}_2D_causal_stride_dilation", d, bf16, RegisterTensorCoreTests.Visits.Masked,
                        [6, 6], [3, 5], [1, 2], [2, 1], [false, true], 2, 2, 0, [4, 4], [4, 4]);
                }

                // Two warps and a KV sub-tile of 32 keys (two 16-key blocks per sub-tile).
                yield return Case($"D{d}_{format}_1D_two_warps_two_blocks_GQA", d, bf16, RegisterTensorCoreTests.Visits.Masked,
                    [45], [11], [1], [1], [false], 2, 1, 0, [32], [32]);
                if (!bf16)
                {
                    // bf16 is left out here: the exact dV reaches 1.6 under the causal axis, and rounding it to bf16 alone
                    // costs 3.7e-3 to 3.9e-3 of the absolute 4e-3 bound (measured: kernel 4.9e-3 in bf16, the same as the
                    // version-1 kernel). Tolerance.BFloat16Gradient is not loosened; the bf16 case is judged by
                    // FlashAttention's rule in Bfloat16GradientsFollowTheToleranceRule.
                    yield return Case($"D{d}_{format}_2D_two_warps_two_blocks", d, bf16, RegisterTensorCoreTests.Visits.Masked,
                        [8, 6], [3, 3], [1, 1], [1, 2], [false, true], 1, 1, 0, [4, 8], [4, 8]);
                }
            }

            // Staging (dQ: K, V sub-tiles; dK/dV: Q, dO per query sub-tile and query head): neighborhood sub-tiles, then a full and a
            // partial (zero-filled) additional-token sub-tile in dQ's loop; two query heads per kv head in dK/dV's, every head a
            // staging step — both walks refill each buffer more than once. cp.async double buffering (the default) and the
            // synchronous element staging (NATTEN_KV_STAGING=elements).
            foreach (var staging in new[] { KvStagingKind.Async, KvStagingKind.Elements })
            {
                var name = staging == KvStagingKind.Async ? "async" : "element_staging";
                yield return Case($"D{d}_fp16_{name}_1D_subtiles_additional_GQA", d, false,
                    RegisterTensorCoreTests.Visits.Masked | RegisterTensorCoreTests.Visits.Unmasked | RegisterTensorCoreTests.Visits.BufferReuse,
                    [48], [33], [1], [1], [false], 2, 1, 21, [16], [16], staging: staging);
            }

            yield return Case($"D{d}_fp16_element_staging_2D_causal_GQA", d, false, RegisterTensorCoreTests.Visits.Masked | RegisterTensorCoreTests.Visits.BufferReuse,
                [8, 8], [5, 5], [1, 1], [1, 1], [true, false], 2, 1, 0, [4, 4], [4, 4], staging: KvStagingKind.Elements);

            // Element loads (NATTEN_FRAGMENT_LOADS=elements) on two shapes per head dimension.
            yield return Case($"D{d}_fp16_elements_1D_causal_dilation_additional", d, false, RegisterTensorCoreTests.Visits.Masked,
                [33], [5], [1], [2], [true], 1, 1, 21, [16], [16], FragmentLoadKind.Elements);
            yield return Case($"D{d}_fp16_elements_1D_two_warps_two_blocks_GQA", d, false, RegisterTensorCoreTests.Visits.Masked,
                [45], [11], [1], [1], [false], 2, 1, 0, [32], [32], FragmentLoadKind.Elements);
        }
    }

    [SetUp]
    public void RequireDevice()
    {
        if (!AttentionDevice.IsAvailable(kind))
        {
            Assert.Ignore($"No {kind} accelerator on this machine.");
        }
    }

    [TestCaseSource(nameof(Problems))]
    public void GeneratedBackwardMatchesReference(
        NeighborhoodProblem reference, FusedTiles tiles, bool bfloat16, RegisterTensorCoreTests.Visits visits, bool elementLoads, bool elementStaging)
    {
        var staging = elementStaging ? KvStagingKind.Elements : KvStagingKind.Async;
        using var pinned = FragmentLoading.Use(elementLoads ? FragmentLoadKind.Elements : FragmentLoadKind.Matrix);
        using var pinnedStaging = KvStaging.Use(staging);
        var run = new Run(kind, reference, tiles, bfloat16);
        var simulator = new FnaSimulator(run.P, run.Tile, KvTilingMode.Dynamic);
        if (visits.HasFlag(RegisterTensorCoreTests.Visits.Masked))
        {
            Assert.That(simulator.PartiallyMaskedSubTiles, Is.GreaterThan(0), "the case visits masked (window-edge) sub-tiles");
        }

        if (visits.HasFlag(RegisterTensorCoreTests.Visits.Unmasked))
        {
            Assert.That(simulator.UnmaskedSubTiles, Is.GreaterThan(0), "the case visits sub-tiles inside every window (no-mask path)");
        }

        if (visits.HasFlag(RegisterTensorCoreTests.Visits.BufferReuse))
        {
            var additionalSubTiles = (run.P.AdditionalTokens + run.Tile.KeyTile - 1) / run.Tile.KeyTile;
            Assert.That(simulator.MaxVisited + additionalSubTiles, Is.GreaterThan(2), "some dQ group stages more than two KV sub-tiles");
            Assert.That(KeyValueSteps(run.P, run.Tile), Is.GreaterThan(2), "some dK/dV group stages more than two (query sub-tile, head) steps");
        }

        var grads = run.Backward(expectStaging: (staging, staging));
        var expected = run.ReferenceGradients();
        var tolerance = bfloat16 ? Tolerance.BFloat16Gradient : Tolerance.Float16Gradient;
        Assert.That(TestData.MaxAbsDiff(expected.Query, run.Values(grads.Query)), Is.LessThanOrEqualTo(tolerance), "dQ (generated kernel)");
        Assert.That(TestData.MaxAbsDiff(expected.Key, run.Values(grads.Key)), Is.LessThanOrEqualTo(tolerance), "dK (generated kernel)");
        Assert.That(TestData.MaxAbsDiff(expected.Value, run.Values(grads.Value)), Is.LessThanOrEqualTo(tolerance), "dV (generated kernel)");
        if (reference.AdditionalTokens > 0)
        {
            Assert.That(TestData.MaxAbsDiff(expected.AdditionalKey, run.Values(grads.AdditionalKey)), Is.LessThanOrEqualTo(tolerance), "d(additional K)");
            Assert.That(TestData.MaxAbsDiff(expected.AdditionalValue, run.Values(grads.AdditionalValue)), Is.LessThanOrEqualTo(tolerance), "d(additional V)");
        }
    }

    /// <summary>
    /// Inputs as sub-views at an element offset: K, V and the additional K, V (what dQ streams) at <paramref name="kvOffset"/>, Q
    /// and dO (what dK/dV streams) at <paramref name="queryOffset"/>. At multiples of 8 elements (16 bytes) the cp.async staging
    /// runs; at odd offsets that kernel's launcher must take the element staging, independently of the other kernel.
    /// </summary>
    [TestCase(1, 0)]
    [TestCase(0, 3)]
    [TestCase(8, 8)]
    public void ViewsAtAnElementOffsetStageCorrectly(int kvOffset, int queryOffset)
    {
        var reference = new NeighborhoodProblem
        {
            Batch = 1, Spatial = [40], Heads = 2, KvHeads = 1, HeadDim = 32, ValueDim = 32, KernelSize = [17],
            Stride = [1], Dilation = [1], Causal = [false], AdditionalTokens = 5,
        };
        using var pinned = KvStaging.Use(KvStagingKind.Async);
        var run = new Run(kind, reference, new FusedTiles(AxisValues.PerAxis([16]), AxisValues.PerAxis([16])), false);
        var grads = run.Backward(
            kvOffset, queryOffset,
            (kvOffset % 8 == 0 ? KvStagingKind.Async : KvStagingKind.Elements, queryOffset % 8 == 0 ? KvStagingKind.Async : KvStagingKind.Elements));
        var expected = run.ReferenceGradients();
        Assert.That(TestData.MaxAbsDiff(expected.Query, run.Values(grads.Query)), Is.LessThanOrEqualTo(Tolerance.Float16Gradient), "dQ");
        Assert.That(TestData.MaxAbsDiff(expected.Key, run.Values(grads.Key)), Is.LessThanOrEqualTo(Tolerance.Float16Gradient), "dK");
        Assert.That(TestData.MaxAbsDiff(expected.Value, run.Values(grads.Value)), Is.LessThanOrEqualTo(Tolerance.Float16Gradient), "dV");
        Assert.That(TestData.MaxAbsDiff(expected.AdditionalKey, run.Values(grads.AdditionalKey)), Is.LessThanOrEqualTo(Tolerance.Float16Gradient), "d(additional K)");
        Assert.That(TestData.MaxAbsDiff(expected.AdditionalValue, run.Values(grads.AdditionalValue)), Is.LessThanOrEqualTo(Tolerance.Float16Gradient), "d(additional V)");
    }

    public static IEnumerable<TestCaseData> RuleCases()
    {
        foreach (var d in new[] { 32, 64, 128 })
        {
            yield return RuleCase($"D{d}_2D_two_warps_two_blocks", d, [8, 6], [3, 3], [1, 1], [1, 2], 1, [4, 8]);
        }

        yield return RuleCase("D32_2D_causal_stride_dilation", 32, [6, 6], [3, 5], [1, 2], [2, 1], 2, [4, 4]);
    }

    /// <summary>
    /// The bf16 cases left out of <see cref="GeneratedBackwardMatchesReference"/> (their exact dV reaches 1.2 to 1.6, where
    /// rounding to bf16 alone nearly fills the absolute 4e-3 bound), judged by FlashAttention's rule instead: kernel error
    /// ≤ 2 × the error of a plain float32 backward whose gradients are rounded to bf16, + the bf16 floor. The plain
    /// baseline itself must match the Reference to float32 accuracy, so the rule cannot pass vacuously.
    /// </summary>
    [TestCaseSource(nameof(RuleCases))]
    public void Bfloat16GradientsFollowTheToleranceRule(NeighborhoodProblem reference, FusedTiles tiles)
    {
        var run = new Run(kind, reference, tiles, bfloat16: true);
        var grads = run.Backward();
        var expected = run.ReferenceGradients();
        var plain = run.PlainGradients();
        Assert.That(TestData.MaxAbsDiff(expected.Value, plain.Value), Is.LessThanOrEqualTo(Tolerance.Float32Gradient), "the float32 baseline itself");
        float[] Rounded(float[] x) => x.Select(v => BFloat16Conversions.ToSingle(BFloat16Conversions.FromSingle(v))).ToArray();
        Tolerance.AssertRule(expected.Query, run.Values(grads.Query), Rounded(plain.Query), Tolerance.BFloat16Floor, "dQ");
        Tolerance.AssertRule(expected.Key, run.Values(grads.Key), Rounded(plain.Key), Tolerance.BFloat16Floor, "dK");
        Tolerance.AssertRule(expected.Value, run.Values(grads.Value), Rounded(plain.Value), Tolerance.BFloat16Floor, "dV");
    }

    [Test]
    public void GeneratedBackwardIsBitwiseDeterministic([Values(64, 128)] int d)
    {
        var problem = new NeighborhoodProblem
        {
            Batch = 1, Spatial = [24], Heads = 2, KvHeads = 1, HeadDim = d, ValueDim = d, KernelSize = [9],
            Stride = [1], Dilation = [1], Causal = [false], AdditionalTokens = 3,
        };
        var run = new Run(kind, problem, new FusedTiles(AxisValues.PerAxis([16]), AxisValues.PerAxis([16])), false);
        var first = run.Backward();
        var second = run.Backward();
        Assert.That(first.Query.Any(x => x != 0), Is.True, "dQ is not all zero");
        Assert.That(second.Query, Is.EqualTo(first.Query), "dQ");
        Assert.That(second.Key, Is.EqualTo(first.Key), "dK (generated kernel)");
        Assert.That(second.Value, Is.EqualTo(first.Value), "dV (generated kernel)");
    }

    [Test]
    public void DispatchTakesTheGeneratedKernelsOnlyForGeneratedHeadDims()
    {
        foreach (var d in new[] { 32, 64, 128 })
        {
            var p = new ProblemParams(1, 1, 1, d, d, 0, [40], [7], [1], [1], [false], 1.0);
            Assert.That(FnaTensorCoreBackward.UsesRegisterKernels(p), Is.True, $"D = Dv = {d}");
        }

        foreach (var (d, dv) in new[] { (64, 32), (128, 64), (16, 16), (48, 48), (256, 256) })
        {
            var p = new ProblemParams(1, 1, 1, d, dv, 0, [40], [7], [1], [1], [false], 1.0);
            Assert.That(FnaTensorCoreBackward.UsesRegisterKernels(p), Is.False, $"D {d}, Dv {dv}");
        }
    }

    private static TestCaseData RuleCase(string name, int d, int[] spatial, int[] kernel, int[] stride, int[] dilation, int heads, int[] tile)
    {
        var problem = new NeighborhoodProblem
        {
            Batch = 1, Spatial = spatial, Heads = heads, KvHeads = heads, HeadDim = d, ValueDim = d, KernelSize = kernel,
            Stride = stride, Dilation = dilation, Causal = [false, true], AdditionalTokens = 0,
        };
        var tiles = new FusedTiles(AxisValues.PerAxis(tile), AxisValues.PerAxis(tile));
        return new TestCaseData(problem, tiles).SetName($"{{m}}({name})");
    }

    private static TestCaseData Case(
        string name, int d, bool bfloat16, RegisterTensorCoreTests.Visits visits, int[] spatial, int[] kernel, int[] stride, int[] dilation,
        bool[] causal, int heads, int kvHeads, int additional, int[] queryTile, int[] keyTile, FragmentLoadKind loads = FragmentLoadKind.Matrix,
        KvStagingKind staging = KvStagingKind.Async)
    {
        var problem = new NeighborhoodProblem
        {
            Batch = 1, Spatial = spatial, Heads = heads, KvHeads = kvHeads, HeadDim = d, ValueDim = d, KernelSize = kernel,
            Stride = stride, Dilation = dilation, Causal = causal, AdditionalTokens = additional,
        };
        var tiles = new FusedTiles(AxisValues.PerAxis(queryTile), AxisValues.PerAxis(keyTile));
        return new TestCaseData(problem, tiles, bfloat16, visits, loads == FragmentLoadKind.Elements, staging == KvStagingKind.Elements).SetName($"{{m}}({name})");
    }

    /// <summary>The most staging steps of any dK/dV group: its query sub-tiles over the inverse neighborhood times the kv group's heads.</summary>
    private static int KeyValueSteps(ProblemParams p, FnaTileShape tile)
    {
        var tiles = p.D0 * FnaForwardKernel.TilesPerGroup(p.N0, p.D0, tile.Q0)
            * p.D1 * FnaForwardKernel.TilesPerGroup(p.N1, p.D1, tile.Q1)
            * p.D2 * FnaForwardKernel.TilesPerGroup(p.N2, p.D2, tile.Q2);
        var most = 0;
        for (var x = 0; x < tiles; x++)
        {
            InverseTileAxis.ForGridIndex(p, tile, x, out var axis0, out var axis1, out var axis2);
            if (!(axis0.IsEmpty || axis1.IsEmpty || axis2.IsEmpty))
            {
                most = Math.Max(
                    most,
                    FnaRegisterBackwardTile.SubTiles(axis0, tile.K0) * FnaRegisterBackwardTile.SubTiles(axis1, tile.K1)
                        * FnaRegisterBackwardTile.SubTiles(axis2, tile.K2) * (p.Heads / p.KvHeads));
            }
        }

        return most;
    }

    /// <summary>Inputs in the storage format, the tensor-core forward (O, LSE), and the backward through the host dispatch.</summary>
    private sealed class Run
    {
        private readonly ComputeDevice _device;
        private readonly NeighborhoodProblem _reference;
        private readonly bool _bfloat16;
        private readonly ushort[] _q, _k, _v, _ak, _av, _dO;

        public Run(AcceleratorKind kind, NeighborhoodProblem reference, FusedTiles tiles, bool bfloat16)
        {
            _reference = reference;
            _bfloat16 = bfloat16;
            var (shape, options) = TensorCoreTests.Describe(reference, tiles);
            _device = DeviceRuntime.Get(kind);
            var problem = ProblemValidator.Validate(shape, options, bfloat16 ? ElementType.BFloat16 : ElementType.Float16);
            P = NaiveBackend.ToParams(problem);
            var tile = FusedBackend.TensorCoreTile(_device, problem, P);
            Assert.That(tile, Is.Not.Null, "this problem must take the tensor-core path");
            Tile = tile!.Value;
            Assert.That(FnaTensorCoreBackward.Check(_device, P, Tile), Is.Null, "this problem must take the tensor-core backward");
            Assert.That(FnaTensorCoreBackward.UsesRegisterKernels(P), Is.True, "D = Dv = 64 or 128 must take the generated dQ and dK/dV kernels");

            var rng = new Random((reference.Tokens * 977) + reference.HeadDim + (bfloat16 ? 1 : 0));
            var rows = (long)reference.Batch * reference.Tokens;
            var extra = (long)reference.Batch * reference.AdditionalTokens;
            ushort[] Data(long n) => TestData.Floats(rng, n).Select(Bits).ToArray();
            _q = Data(rows * reference.Heads * reference.HeadDim);
            _k = Data(rows * reference.KvHeads * reference.HeadDim);
            _v = Data(rows * reference.KvHeads * reference.ValueDim);
            _ak = Data(extra * reference.KvHeads * reference.HeadDim);
            _av = Data(extra * reference.KvHeads * reference.ValueDim);
            _dO = Data(rows * reference.Heads * reference.ValueDim);
        }

        public ProblemParams P { get; }

        public FnaTileShape Tile { get; }

        public float[] Values(ushort[] bits) => bits.Select(Value).ToArray();

        public AttentionGradients ReferenceGradients()
        {
            var extra = _reference.AdditionalTokens > 0;
            double[] D(ushort[] x) => TestData.ToDouble(Values(x));
            return ReferenceAttention.NeighborhoodBackward(_reference, D(_q), D(_k), D(_v), D(_dO), extra ? D(_ak) : null, extra ? D(_av) : null);
        }

        /// <summary>The plain float32 backward on the same (16-bit-rounded) inputs.</summary>
        public (float[] Query, float[] Key, float[] Value) PlainGradients()
            => PlainAttention.Backward(_reference, Values(_q), Values(_k), Values(_v), Values(_dO));

        /// <summary>
        /// The forward and backward through the host dispatch. K, V and the additional K, V are views <paramref name="kvOffset"/>
        /// elements into their buffers, Q and dO <paramref name="queryOffset"/>; <paramref name="expectStaging"/>, when given, is the
        /// staging the dQ and the dK/dV launcher must choose for them.
        /// </summary>
        public (ushort[] Query, ushort[] Key, ushort[] Value, ushort[] AdditionalKey, ushort[] AdditionalValue) Backward(
            int kvOffset = 0, int queryOffset = 0, (KvStagingKind QueryGrad, KvStagingKind KeyValueGrad)? expectStaging = null)
        {
            var accelerator = _device.Accelerator;
            MemoryBuffer1D<ushort, Stride1D.Dense> Upload(ushort[] data) => data.Length > 0 ? accelerator.Allocate1D(data) : accelerator.Allocate1D<ushort>(1);
            MemoryBuffer1D<ushort, Stride1D.Dense> Zeros(int length)
            {
                var buffer = accelerator.Allocate1D<ushort>(Math.Max(length, 1));
                buffer.MemSetToZero();
                return buffer;
            }

            MemoryBuffer1D<ushort, Stride1D.Dense> UploadAt(ushort[] data, int offset) => Upload([.. Enumerable.Repeat((ushort)0x7BFF, offset), .. data]);
            ArrayView<ushort> At(MemoryBuffer1D<ushort, Stride1D.Dense> buffer, ushort[] data, int offset) => buffer.View.SubView(offset, data.Length);
            var rows = (long)_reference.Batch * _reference.Tokens;
            using var tq = UploadAt(_q, queryOffset);
            using var tk = UploadAt(_k, kvOffset);
            using var tv = UploadAt(_v, kvOffset);
            using var tak = UploadAt(_ak, kvOffset);
            using var tav = UploadAt(_av, kvOffset);
            using var tdO = UploadAt(_dO, queryOffset);
            var (q, k, v, ak, av, dO) = (At(tq, _q, queryOffset), At(tk, _k, kvOffset), At(tv, _v, kvOffset), At(tak, _ak, kvOffset), At(tav, _av, kvOffset), At(tdO, _dO, queryOffset));
            if (expectStaging is { } staging)
            {
                Assert.That(FnaTensorCoreBackward.QueryGradStaging(_device, P, Tile, k, v, ak, av), Is.EqualTo(staging.QueryGrad), "the dQ launcher's staging");
                Assert.That(FnaTensorCoreBackward.KeyValueGradStaging(_device, P, Tile, q, dO), Is.EqualTo(staging.KeyValueGrad), "the dK/dV launcher's staging");
            }

            using var output = Zeros(_dO.Length);
            using var lse = accelerator.Allocate1D<float>(rows * _reference.Heads);
            lse.MemSetToZero();
            using var dq = Zeros(_q.Length);
            using var dk = Zeros(_k.Length);
            using var dv = Zeros(_v.Length);
            using var dak = Zeros(_ak.Length);
            using var dav = Zeros(_av.Length);
            var stream = accelerator.DefaultStream;
            if (_bfloat16)
            {
                FnaTensorCore.Forward<Bf16Format>(_device, stream, P, Tile, q, k, v, ak, av, output.View, lse.View);
                FnaTensorCoreBackward.Backward<Bf16Format, BFloat16Storage>(
                    _device, stream, P, Tile, q, k, v, ak, av, output.View, lse.View, dO,
                    dq.View, dk.View, dv.View, dak.View, dav.View);
            }
            else
            {
                FnaTensorCore.Forward<Fp16Format>(_device, stream, P, Tile, q, k, v, ak, av, output.View, lse.View);
                FnaTensorCoreBackward.Backward<Fp16Format, Float16BitsStorage>(
                    _device, stream, P, Tile, q, k, v, ak, av, output.View, lse.View, dO,
                    dq.View, dk.View, dv.View, dak.View, dav.View);
            }

            accelerator.Synchronize();
            ushort[] Read(MemoryBuffer1D<ushort, Stride1D.Dense> b, int length) => b.GetAsArray1D().Take(length).ToArray();
            return (Read(dq, _q.Length), Read(dk, _k.Length), Read(dv, _v.Length), Read(dak, _ak.Length), Read(dav, _av.Length));
        }

        private ushort Bits(float x) => _bfloat16 ? BFloat16Conversions.FromSingle(x) : BitConverter.HalfToUInt16Bits((Half)x);

        private float Value(ushort bits) => _bfloat16 ? BFloat16Conversions.ToSingle(bits) : (float)BitConverter.UInt16BitsToHalf(bits);
    }
}
