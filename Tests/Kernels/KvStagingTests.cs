using ILGPU;
using ILGPU.Runtime;
using Natten.Backends;
using Natten.Kernels.Common;
using Natten.Kernels.Cuda;
using Natten.Kernels.Fused;
using Natten.Kernels.Runtime;
using Natten.Validation;

namespace Natten.Tests.Kernels;

/// <summary>
/// The KV staging of the register-resident tensor-core forward: the 16-byte asynchronous copy (<see cref="AsyncCopy"/>: real
/// <c>cp.async</c> on CUDA, its synchronous emulation elsewhere) and the two stagings built on it, which must fill every KV
/// buffer of every step identically — neighborhood sub-tiles with zero rows past the dilation group's end, and additional-token
/// sub-tiles with zero rows past the last token.
/// </summary>
[TestFixtureSource(nameof(Accelerators))]
public sealed class KvStagingTests(AcceleratorKind kind)
{
    private const int MaxSteps = 8;

    public static IEnumerable<AcceleratorKind> Accelerators => [AcceleratorKind.Cpu, AcceleratorKind.Cuda];

    [SetUp]
    public void RequireDevice()
    {
        if (!AttentionDevice.IsAvailable(kind))
        {
            Assert.Ignore($"No {kind} accelerator on this machine.");
        }
    }

    [Test]
    public void AsyncCopiesAndZeroFillsLandWhereExpected([Values(1, 2)] int seed)
    {
        var (compared, wrong) = AsyncCopyProbe.Check(DeviceRuntime.Get(kind), seed);
        Assert.That(compared, Is.EqualTo(AsyncCopyProbe.Chunks * AsyncCopy.Elements));
        Assert.That(wrong, Is.Zero, $"{wrong} of {compared} elements differ");
    }

    [Test]
    public void TheProbesExpectationHasCopiedAndZeroChunks()
    {
        var data = Enumerable.Range(0, AsyncCopyProbe.SourceOffset + (AsyncCopyProbe.SourceChunks * AsyncCopy.Elements)).Select(i => (ushort)(i + 1)).ToArray();
        var map = Enumerable.Range(0, AsyncCopyProbe.Chunks).Select(c => c % 5 == 0 ? -1 : c + 3).ToArray();
        var expected = AsyncCopyProbe.Expected(data, map);
        Assert.That(expected[..AsyncCopy.Elements], Has.All.Zero, "chunk 0 is zero-filled");
        Assert.That(expected[AsyncCopy.Elements], Is.EqualTo(data[AsyncCopyProbe.SourceOffset + (4 * AsyncCopy.Elements)]), "chunk 1 is source chunk 4, after the offset");
    }

    /// <summary>
    /// (spatial, kernel, dilation, additional tokens, D): dilation leaves short groups (zero rows in the last neighborhood sub-tile);
    /// the additional tokens end inside a sub-tile; D = 32, 64, 128 give 4, 8 and 16 chunks per row.
    /// </summary>
    [TestCase(37, 9, 2, 21, 32)]
    [TestCase(45, 11, 2, 37, 64)]
    [TestCase(24, 7, 1, 5, 128)]
    public void BothStagingsFillEveryBufferAlike(int spatial, int kernel, int dilation, int additional, int headDim)
    {
        var device = DeviceRuntime.Get(kind);
        var shape = new AttentionShape(1, AxisValues.PerAxis([spatial]), 2, headDim) { KvHeads = 1, AdditionalTokens = additional };
        var options = new NeighborhoodAttentionOptions(AxisValues.PerAxis([kernel]))
        {
            Dilation = AxisValues.PerAxis([dilation]),
            Backend = "fused",
            Tiles = new FusedTiles(AxisValues.PerAxis([16]), AxisValues.PerAxis([16])),
        };
        var problem = ProblemValidator.Validate(shape, options, ElementType.Float16);
        var p = NaiveBackend.ToParams(problem);
        var tile = FusedBackend.TensorCoreTile(device, problem, p);
        Assert.That(tile, Is.Not.Null);

        var rng = new Random(headDim + additional);
        ushort[] Data(long n) => [.. Enumerable.Range(0, (int)n).Select(_ => (ushort)rng.Next(1, 65535)).Select(x => x is Marker or Unused ? (ushort)1 : x)];
        var key = Data((long)spatial * p.KvHeads * headDim);
        var value = Data((long)spatial * p.KvHeads * headDim);
        var additionalKey = Data((long)additional * p.KvHeads * headDim);
        var additionalValue = Data((long)additional * p.KvHeads * headDim);

        var async = Stage<AsyncStaging>(device, p, tile!.Value, key, value, additionalKey, additionalValue);
        var elements = Stage<ElementStaging>(device, p, tile.Value, key, value, additionalKey, additionalValue);
        Assert.That(async, Is.EqualTo(elements), "cp.async staging and element staging fill the same buffers");

        // Both staged zero rows (short dilation groups, the partial additional sub-tile) and data rows; rows of steps a tile does
        // not have keep the host's marker.
        var stride = headDim + 8;
        var rows = async.Chunk(stride).Select(r => r[..headDim]).Where(r => !r.All(x => x == Unused)).ToArray();
        Assert.That(rows, Has.Length.GreaterThan(2 * 16 * 2), "more than two staged steps");
        Assert.That(rows.Count(r => r.All(x => x == 0)), Is.GreaterThan(0), "zero-filled rows");
        Assert.That(rows.Count(r => r.All(x => x != 0)), Is.GreaterThan(0), "copied rows");
        Assert.That(rows.Any(r => r.Any(x => x == Marker)), Is.False, "every staged element was written");
    }

    private const ushort Marker = 0xBEEF;

    /// <summary>What the host writes into the output first (every byte 0xEF): rows of steps a tile does not have keep it.</summary>
    private const ushort Unused = 0xEFEF;

    private static ushort[] Stage<TStaging>(
        ComputeDevice device, ProblemParams p, FnaTileShape tile, ushort[] key, ushort[] value, ushort[] additionalKey, ushort[] additionalValue)
        where TStaging : struct, IKvStaging
    {
        var accelerator = device.Accelerator;
        MemoryBuffer1D<ushort, Stride1D.Dense> Upload(ushort[] data) => data.Length > 0 ? accelerator.Allocate1D(data) : accelerator.Allocate1D<ushort>(1);
        using var k = Upload(key);
        using var v = Upload(value);
        using var ak = Upload(additionalKey);
        using var av = Upload(additionalValue);
        var tiles = p.D0 * FnaForwardKernel.TilesPerGroup(p.N0, p.D0, tile.Q0)
            * p.D1 * FnaForwardKernel.TilesPerGroup(p.N1, p.D1, tile.Q1)
            * p.D2 * FnaForwardKernel.TilesPerGroup(p.N2, p.D2, tile.Q2);
        var bufferWords = 2 * tile.KeyTile * (p.HeadDim + 8);
        using var output = accelerator.Allocate1D<ushort>((long)tiles * MaxSteps * bufferWords);
        output.View.MemSet(0xEF);
        var launch = accelerator.LoadKernel<ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>>(
            StageAll<TStaging>);
        launch(
            accelerator.DefaultStream,
            new KernelConfig(new Index3D(tiles, 1, 1), new Index3D(tile.QueryTile * 2, 1, 1), SharedMemoryConfig.RequestDynamic<ushort>(bufferWords)),
            p, tile, k.View, v.View, ak.View, av.View, output.View);
        accelerator.Synchronize();
        return output.GetAsArray1D();
    }

    /// <summary>One group per query tile (head 0, batch 0): every step of the forward's loop staged into one buffer and written out.</summary>
    private static void StageAll<TStaging>(
        ProblemParams p, FnaTileShape tile, ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<ushort> additionalKey,
        ArrayView<ushort> additionalValue, ArrayView<ushort> output)
        where TStaging : struct, IKvStaging
    {
        TileAxis.ForGridIndex(p, tile, Grid.IdxX, out var axis0, out var axis1, out var axis2);
        if (axis0.IsEmpty || axis1.IsEmpty || axis2.IsEmpty)
        {
            return;
        }

        var stride = p.HeadDim + 8;
        var words = 2 * tile.KeyTile * stride;
        var buffer = SharedMemory.GetDynamic<ushort>();
        var steps1 = (axis1.RangeEnd - axis1.RangeStart + tile.K1 - 1) / tile.K1;
        var steps2 = (axis2.RangeEnd - axis2.RangeStart + tile.K2 - 1) / tile.K2;
        var neighborhood = ((axis0.RangeEnd - axis0.RangeStart + tile.K0 - 1) / tile.K0) * steps1 * steps2;
        var steps = neighborhood + ((p.AdditionalTokens + tile.KeyTile - 1) / tile.KeyTile);
        for (var step = 0; step < steps && step < MaxSteps; step++)
        {
            for (var i = Group.IdxX; i < words; i += Group.DimX)
            {
                buffer[i] = Marker;
            }

            Group.Barrier();
            KvStaging.Stage<TStaging>(
                p, tile, axis0, axis1, axis2, steps1, steps2, neighborhood, step, 0, p.KvHeadOf(0), key, value, additionalKey, additionalValue,
                buffer.SubView(0, words), stride, Group.IdxX, Group.DimX);
            TStaging.Commit();
            AsyncCopy.WaitAll();
            Group.Barrier();
            var at = (((long)Grid.IdxX * MaxSteps) + step) * words;
            for (var slot = Group.IdxX; slot < 2 * tile.KeyTile; slot += Group.DimX)
            {
                for (var c = 0; c < p.HeadDim; c++)
                {
                    output[at + (slot * stride) + c] = buffer[(slot * stride) + c];
                }
            }

            Group.Barrier();
        }
    }
}
