using ILGPU;
using ILGPU.Runtime;
using Natten.Backends;
using Natten.Kernels.Cuda;
using Natten.Kernels.Fused;
using Natten.Kernels.Runtime;
using Natten.Reference;
using Natten.Tests.Support;
using Natten.Validation;
using Half = System.Half;

namespace Natten.Tests.Kernels;

/// <summary>
/// The generated register-resident tensor-core forwards (D = Dv = 32, 64 and 128, fp16 and bf16; fragments through
/// ldmatrix, the default, and a subset through element loads; KV sub-tiles staged with 16-byte async copies into two buffers, the
/// default, and a subset with the previous synchronous element staging) against the double
/// Reference by FlashAttention's rule. On the CPU accelerator the fragments go through the lane-exact mma emulation
/// and the warp shuffles, and ldmatrix through its lane-by-lane model, so these run the kernels' own fragment, masking and
/// softmax code. Shapes are tiny: the
/// emulation costs two group barriers per mma.
/// </summary>
[TestFixtureSource(nameof(Accelerators))]
public sealed class RegisterTensorCoreTests(AcceleratorKind kind)
{
    public static IEnumerable<AcceleratorKind> Accelerators => [AcceleratorKind.Cpu, AcceleratorKind.Cuda];

    /// <summary>Which kinds of KV sub-tile a problem must visit (checked with the simulator, so the case tests what its name says).</summary>
    [Flags]
    public enum Visits
    {
        Masked = 1,
        Unmasked = 2,

        /// <summary>Some query tile stages more than two sub-tiles (neighborhood and additional): each of the two KV buffers is refilled.</summary>
        BufferReuse = 4,
    }

    public static IEnumerable<TestCaseData> Problems()
    {
        foreach (var d in new[] { 32, 64, 128 })
        {
            foreach (var bf16 in new[] { false, true })
            {
                var format = bf16 ? "bf16" : "fp16";

                // (spatial, kernel, stride, dilation, causal, heads, kvHeads, additional, query tile, KV tile)
                yield return Case($"D{d}_{format}_1D_inside_and_edge_subtiles_GQA", d, bf16, Visits.Masked | Visits.Unmasked,
                    [48], [33], [1], [1], [false], 2, 1, 0, [16], [16]);
                yield return Case($"D{d}_{format}_1D_dilation_partial_tiles_KV32", d, bf16, Visits.Masked,
                    [37], [7], [1], [2], [false], 1, 1, 0, [16], [32]);
                // 21 additional tokens with 16-key sub-tiles: one full sub-tile (no-mask path) and a partial one (5 keys).
                yield return Case($"D{d}_{format}_1D_causal_additional", d, bf16, Visits.Masked,
                    [33], [9], [1], [1], [true], 1, 1, 21, [16], [16]);
                yield return Case($"D{d}_{format}_2D_causal_stride_dilation", d, bf16, Visits.Masked,
                    [6, 6], [3, 5], [1, 2], [2, 1], [false, true], 2, 2, 0, [4, 4], [4, 4]);

                // KV sub-tile 2×8 under a 4×4 query tile: on axis 0 the first sub-tile [0, 2) holds no key of row 3's window
                // [2, 5), so some rows meet a chunk with every key masked before any allowed key (the max −∞ path).
                yield return Case($"D{d}_{format}_2D_rows_without_keys_in_first_chunk", d, bf16, Visits.Masked,
                    [8, 6], [3, 3], [1, 1], [1, 2], [false, true], 1, 1, 0, [4, 4], [2, 8]);

                // Two warps and a KV sub-tile of two chunks (128 keys for D 64, 64 keys for D 128): the chunk loop runs twice.
                yield return Case($"D{d}_{format}_1D_two_warps_two_chunks", d, bf16, Visits.Masked,
                    [80], [d == 128 ? 33 : 65], [1], [1], [false], 1, 1, 0, [32], [d == 128 ? 64 : 128]);
            }

            // Staging: four and more neighborhood sub-tiles per query tile (each KV buffer refilled while the other is read), then
            // neighborhood and three additional-token sub-tiles (the last partial: zero-filled slots) in one loop; cp.async staging
            // (the default) and the synchronous element staging (NATTEN_KV_STAGING=elements).
            foreach (var staging in new[] { KvStagingKind.Async, KvStagingKind.Elements })
            {
                var name = staging == KvStagingKind.Async ? "async" : "element_staging";
                yield return Case($"D{d}_fp16_{name}_1D_four_subtiles_buffer_reuse", d, false, Visits.Masked | Visits.Unmasked | Visits.BufferReuse,
                    [64], [49], [1], [1], [false], 1, 1, 0, [16], [16], staging: staging);
                yield return Case($"D{d}_fp16_{name}_1D_dilation_edges_and_additional", d, false, Visits.Masked | Visits.BufferReuse,
                    [45], [11], [1], [2], [false], 2, 1, 37, [16], [16], staging: staging);
            }

            // Element loads (NATTEN_FRAGMENT_LOADS=elements) on two shapes per head dimension.
            yield return Case($"D{d}_fp16_elements_1D_inside_and_edge_subtiles_GQA", d, false, Visits.Masked | Visits.Unmasked,
                [48], [33], [1], [1], [false], 2, 1, 0, [16], [16], FragmentLoadKind.Elements);
            yield return Case($"D{d}_fp16_elements_2D_causal_stride_dilation", d, false, Visits.Masked,
                [6, 6], [3, 5], [1, 2], [2, 1], [false, true], 2, 2, 0, [4, 4], [4, 4], FragmentLoadKind.Elements);
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
    public void GeneratedForwardFollowsTheToleranceRule(
        NeighborhoodProblem reference, FusedTiles tiles, bool bfloat16, Visits visits, bool elementLoads, bool elementStaging)
    {
        var staging = elementStaging ? KvStagingKind.Elements : KvStagingKind.Async;
        using var pinned = FragmentLoading.Use(elementLoads ? FragmentLoadKind.Elements : FragmentLoadKind.Matrix);
        using var pinnedStaging = KvStaging.Use(staging);
        RunAgainstReference(kind, reference, tiles, bfloat16, visits, expectStaging: staging);
    }

    /// <summary>
    /// K, V and the additional K, V as sub-views starting <paramref name="offset"/> elements into their buffers: at 8 (16 bytes) the
    /// cp.async staging still runs; at odd offsets the rows are not 16-byte aligned and the launcher must take the element staging.
    /// </summary>
    [TestCase(1)]
    [TestCase(3)]
    [TestCase(8)]
    public void ViewsAtAnElementOffsetStageCorrectly(int offset)
    {
        var reference = new NeighborhoodProblem
        {
            Batch = 1, Spatial = [40], Heads = 1, KvHeads = 1, HeadDim = 32, ValueDim = 32, KernelSize = [17],
            Stride = [1], Dilation = [1], Causal = [false], AdditionalTokens = 5,
        };
        var tiles = new FusedTiles(AxisValues.PerAxis([16]), AxisValues.PerAxis([16]));
        using var pinned = KvStaging.Use(KvStagingKind.Async);
        RunAgainstReference(
            kind, reference, tiles, bfloat16: false, Visits.Masked, viewOffset: offset,
            expectStaging: offset % 8 == 0 ? KvStagingKind.Async : KvStagingKind.Elements);
    }

    /// <summary>
    /// Runs the generated forward on <paramref name="kind"/> with <paramref name="tiles"/> and checks it against the Reference (also
    /// used by <see cref="SharedMemoryOptInTests"/>). K and V views start <paramref name="viewOffset"/> elements into their buffers;
    /// <paramref name="expectStaging"/>, when given, is the staging the launcher must choose for them.
    /// </summary>
    internal static void RunAgainstReference(
        AcceleratorKind kind, NeighborhoodProblem reference, FusedTiles tiles, bool bfloat16, Visits visits, int viewOffset = 0,
        KvStagingKind? expectStaging = null)
    {
        var (shape, options) = TensorCoreTests.Describe(reference, tiles);
        var device = DeviceRuntime.Get(kind);
        var problem = ProblemValidator.Validate(shape, options, bfloat16 ? ElementType.BFloat16 : ElementType.Float16);
        var p = NaiveBackend.ToParams(problem);
        var tile = FusedBackend.TensorCoreTile(device, problem, p);
        Assert.That(tile, Is.Not.Null, "this problem must take the tensor-core path");
        Assert.That(FnaTensorCore.UsesRegisterKernel(p), Is.True, "D = Dv with a generated variant must take the register-resident kernel");
        var simulator = new FnaSimulator(p, tile!.Value, KvTilingMode.Dynamic);
        if (visits.HasFlag(Visits.Masked))
        {
            Assert.That(simulator.PartiallyMaskedSubTiles, Is.GreaterThan(0), "the case visits masked (window-edge) sub-tiles");
        }

        if (visits.HasFlag(Visits.Unmasked))
        {
            Assert.That(simulator.UnmaskedSubTiles, Is.GreaterThan(0), "the case visits sub-tiles inside every window (no-mask path)");
        }

        if (visits.HasFlag(Visits.BufferReuse))
        {
            var additionalSubTiles = (p.AdditionalTokens + tile.Value.KeyTile - 1) / tile.Value.KeyTile;
            Assert.That(simulator.MaxVisited + additionalSubTiles, Is.GreaterThan(2), "some query tile stages more than two sub-tiles (neighborhood and additional)");
        }

        // Inputs representable in the storage format, so the Reference and the plain baseline see the kernel's inputs.
        var rng = new Random((reference.Tokens * 131) + reference.HeadDim + (bfloat16 ? 1 : 0));
        var rows = (long)reference.Batch * reference.Tokens;
        var extra = (long)reference.Batch * reference.AdditionalTokens;
        ushort Bits(float x) => bfloat16 ? BFloat16Conversions.FromSingle(x) : BitConverter.HalfToUInt16Bits((Half)x);
        float Value(ushort bits) => bfloat16 ? BFloat16Conversions.ToSingle(bits) : (float)BitConverter.UInt16BitsToHalf(bits);
        ushort[] Data(long n) => TestData.Floats(rng, n).Select(Bits).ToArray();
        float[] Values(ushort[] bits) => bits.Select(Value).ToArray();
        var q = Data(rows * reference.Heads * reference.HeadDim);
        var k = Data(rows * reference.KvHeads * reference.HeadDim);
        var v = Data(rows * reference.KvHeads * reference.ValueDim);
        var ak = Data(extra * reference.KvHeads * reference.HeadDim);
        var av = Data(extra * reference.KvHeads * reference.ValueDim);

        var accelerator = device.Accelerator;
        MemoryBuffer1D<ushort, Stride1D.Dense> Upload(ushort[] data) => data.Length > 0 ? accelerator.Allocate1D(data) : accelerator.Allocate1D<ushort>(1);
        MemoryBuffer1D<ushort, Stride1D.Dense> UploadAt(ushort[] data) => Upload([.. Enumerable.Repeat((ushort)0x7BFF, viewOffset), .. data]);
        ArrayView<ushort> At(MemoryBuffer1D<ushort, Stride1D.Dense> buffer, ushort[] data) => buffer.View.SubView(viewOffset, data.Length);
        using var tq = Upload(q);
        using var tk = UploadAt(k);
        using var tv = UploadAt(v);
        using var tak = UploadAt(ak);
        using var tav = UploadAt(av);
        var (kView, vView, akView, avView) = (At(tk, k), At(tv, v), At(tak, ak), At(tav, av));
        if (expectStaging is { } staging)
        {
            Assert.That(FnaTensorCore.Staging(device, p, tile.Value, kView, vView, akView, avView), Is.EqualTo(staging), "the launcher's KV staging");
        }

        using var output = accelerator.Allocate1D<ushort>(rows * reference.Heads * reference.ValueDim);
        using var lse = accelerator.Allocate1D<float>(rows * reference.Heads);
        output.MemSetToZero();
        lse.MemSetToZero();
        if (bfloat16)
        {
            FnaTensorCore.Forward<Bf16Format>(
                device, accelerator.DefaultStream, p, tile.Value, tq.View, kView, vView, akView, avView, output.View, lse.View);
        }
        else
        {
            FnaTensorCore.Forward<Fp16Format>(
                device, accelerator.DefaultStream, p, tile.Value, tq.View, kView, vView, akView, avView, output.View, lse.View);
        }

        accelerator.Synchronize();
        var actual = output.GetAsArray1D().Select(Value).ToArray();
        var actualLse = lse.GetAsArray1D();

        var expected = ReferenceAttention.Neighborhood(
            reference, TestData.ToDouble(Values(q)), TestData.ToDouble(Values(k)), TestData.ToDouble(Values(v)),
            extra > 0 ? TestData.ToDouble(Values(ak)) : null, extra > 0 ? TestData.ToDouble(Values(av)) : null);
        var plain = PlainAttention.Forward(reference, Values(q), Values(k), Values(v), Values(ak), Values(av));
        var plainRounded = plain.Output.Select(x => Value(Bits(x))).ToArray();

        // The plain baseline rounds its output to the storage format like the kernel; the kernel also rounds P before P·V
        // (FlashAttention-2), which the floor of the format's rule covers.
        Tolerance.AssertRule(expected.Output, actual, plainRounded, bfloat16 ? Tolerance.BFloat16Floor : Tolerance.Float16Floor, "output");
        Tolerance.AssertRule(expected.LogSumExp, actualLse, plain.Lse, Tolerance.Float32Floor, "lse");
    }

    [Test]
    public void OtherHeadDimsKeepTheVersion1Kernel()
    {
        foreach (var d in new[] { 32, 64, 128 })
        {
            var p = new Natten.Kernels.Common.ProblemParams(1, 1, 1, d, d, 0, [40], [7], [1], [1], [false], 1.0);
            Assert.That(FnaTensorCore.UsesRegisterKernel(p), Is.True, $"D = Dv = {d}");
        }

        foreach (var (d, dv) in new[] { (64, 32), (128, 64), (16, 16), (48, 48), (256, 256) })
        {
            var p = new Natten.Kernels.Common.ProblemParams(1, 1, 1, d, dv, 0, [40], [7], [1], [1], [false], 1.0);
            Assert.That(FnaTensorCore.UsesRegisterKernel(p), Is.False, $"D {d}, Dv {dv}");
        }
    }

    private static TestCaseData Case(
        string name, int d, bool bfloat16, Visits visits, int[] spatial, int[] kernel, int[] stride, int[] dilation, bool[] causal,
        int heads, int kvHeads, int additional, int[] queryTile, int[] keyTile, FragmentLoadKind loads = FragmentLoadKind.Matrix,
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
}
