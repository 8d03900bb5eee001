using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using Natten.Backends;
using Natten.Kernels.BlockSparse;
using Natten.Kernels.Common;
using Natten.Kernels.Fused;
using Natten.Kernels.Runtime;
using Natten.Validation;

namespace Natten.Tests.Kernels;

/// <summary>
/// The one shared-memory limit (<see cref="ComputeDevice.MaxSharedBytesPerGroup"/>, <see cref="ComputeDevice.CheckSharedMemory"/>)
/// and the once-per-kernel opt-in (<see cref="SharedMemoryOptIn"/>, <see cref="ComputeDevice.PrepareSharedMemory"/>). There is no
/// GPU here: a CUDA-like device is the CPU accelerator with a fake driver behind the opt-in seam (48 KB default, the opt-in limit
/// of an sm_90 part), so the checks, the tile search and the opt-in bookkeeping run as they would on CUDA.
/// </summary>
public sealed class SharedMemoryLimitTests
{
    private const int DefaultLimit = 48 * 1024;
    private const int Sm90OptIn = 227 * 1024;

    private static readonly Lazy<(Kernel First, Kernel Second, Action<AcceleratorStream, KernelConfig, ArrayView<int>> Launcher)> Loaded = new(() =>
    {
        var cpu = DeviceRuntime.Get(AcceleratorKind.Cpu).Accelerator;
        var first = cpu.LoadKernel<ArrayView<int>>(OptInTestKernels.First);
        var second = cpu.LoadKernel<ArrayView<int>>(OptInTestKernels.Second);
        return (first.GetKernel(), second.GetKernel(), cpu.LoadKernel<ArrayView<int>>(OptInTestKernels.First));
    });

    [Test]
    public void CpuDeviceKeepsTheAcceleratorLimit()
    {
        var device = DeviceRuntime.Get(AcceleratorKind.Cpu);
        Assert.Multiple(() =>
        {
            Assert.That(device.SharedMemory, Is.Null, "no opt-in on the CPU accelerator");
            Assert.That(device.MaxSharedBytesPerGroup, Is.EqualTo(device.Accelerator.MaxSharedMemoryPerGroup));
            Assert.That(device.MaxDynamicSharedBytes(1000), Is.EqualTo((long)device.Accelerator.MaxSharedMemoryPerGroup - 1000));
            Assert.That(device.CheckSharedMemory("anything", 1L << 20, 4096), Is.Null);
        });

        // Nothing to prepare: no driver call, no exception, whatever the request.
        device.PrepareSharedMemory(Loaded.Value.Launcher, Config(1 << 20));
    }

    [Test]
    public void OptInRaisesEachKernelOnceAcrossThreads()
    {
        var driver = new FakeDriver(staticBytes: 3072);
        var optIn = new SharedMemoryOptIn("fake GPU", DefaultLimit, Sm90OptIn, driver);
        var (first, second, _) = Loaded.Value;
        Parallel.For(0, 64, i => optIn.Prepare(i % 2 == 0 ? first : second, 100_000));

        Assert.Multiple(() =>
        {
            Assert.That(driver.Raised.Count(r => ReferenceEquals(r.Kernel, first)), Is.EqualTo(1), "first kernel raised once");
            Assert.That(driver.Raised.Count(r => ReferenceEquals(r.Kernel, second)), Is.EqualTo(1), "second kernel raised once");
            Assert.That(driver.Raised.Select(r => r.Bytes), Has.All.EqualTo(Sm90OptIn - 3072), "raised to the most the kernel can take");
            Assert.That(driver.StaticQueries, Is.EqualTo(2), "static bytes asked once per kernel");
            Assert.That(optIn.OptedInKernels, Is.EqualTo(2));
            Assert.That(optIn.IsOptedIn(first) && optIn.IsOptedIn(second), Is.True);
        });
    }

    [Test]
    public void LaunchesWithinTheDefaultLimitLeaveTheKernelAlone()
    {
        var driver = new FakeDriver(staticBytes: 4096);
        var optIn = new SharedMemoryOptIn("fake GPU", DefaultLimit, Sm90OptIn, driver);
        var (first, _, _) = Loaded.Value;

        // Static plus dynamic exactly at the 48 KB default: no opt-in.
        optIn.Prepare(first, DefaultLimit - 4096);
        Assert.That(driver.Raised, Is.Empty);
        Assert.That(optIn.IsOptedIn(first), Is.False);

        // One byte more (dynamic still under 48 KB, but not with the static bytes): opted in.
        optIn.Prepare(first, DefaultLimit - 4096 + 1);
        Assert.That(driver.Raised, Has.Count.EqualTo(1));
        Assert.That(optIn.IsOptedIn(first), Is.True);
    }

    [Test]
    public void RequestsBeyondTheOptInLimitThrowWithTheNumbers()
    {
        var driver = new FakeDriver(staticBytes: 3072);
        var optIn = new SharedMemoryOptIn("fake GPU", DefaultLimit, Sm90OptIn, driver);
        var (first, _, _) = Loaded.Value;
        var dynamic = Sm90OptIn - 3072 + 1;

        var error = Assert.Throws<InvalidOperationException>(() => optIn.Prepare(first, dynamic));
        Assert.That(error!.Message, Does.Contain($"needs {Sm90OptIn + 1} bytes of shared memory (3072 static + {dynamic} dynamic)")
            .And.Contain($"fake GPU allows {Sm90OptIn} per group with the opt-in ({DefaultLimit} without)")
            .And.Contain(nameof(OptInTestKernels.First)));
        Assert.That(driver.Raised, Is.Empty, "nothing raised for a launch that cannot run");

        // The most the kernel can take is fine.
        optIn.Prepare(first, dynamic - 1);
        Assert.That(driver.Raised, Has.Count.EqualTo(1));
    }

    [Test]
    public void PrepareSharedMemoryOptsInTheLaunchersKernelOnce()
    {
        var driver = new FakeDriver(staticBytes: 1024);
        var device = CudaLike(Sm90OptIn, driver);
        var launcher = Loaded.Value.Launcher;

        device.PrepareSharedMemory(launcher, new KernelConfig(new Index3D(1, 1, 1), new Index3D(32, 1, 1)));
        device.PrepareSharedMemory(launcher, Config(4000));
        Assert.That(driver.Raised, Is.Empty, "within 48 KB");

        device.PrepareSharedMemory(launcher, Config(100_000));
        device.PrepareSharedMemory(launcher, Config(120_000));
        Assert.That(driver.Raised, Has.Count.EqualTo(1));
        Assert.That(driver.Raised.Single().Kernel, Is.SameAs(launcher.GetKernel()));
        Assert.That(driver.Raised.Single().Bytes, Is.EqualTo(Sm90OptIn - 1024));
    }

    [Test]
    public void ChecksAcceptTilesUpToTheOptInLimit()
    {
        var plain = CudaLike(DefaultLimit);
        var optIn = CudaLike(Sm90OptIn);

        // Register-resident tensor-core forward, D = 128, 64 queries / 64 keys: (64 + 2·64) rows of 136 halves with one KV buffer
        // (element staging), (64 + 4·64) rows with two (cp.async double buffering, the default), plus 3072 static. The check asks
        // the single buffer to fit; the launch double-buffers where the device has room for it.
        var p = Params(128, 128);
        var tile = new FnaTileShape(1, 1, 64, 1, 1, 64);
        Assert.That(FnaTensorCore.SharedBytes(p, tile, KvStagingKind.Elements), Is.EqualTo(55296));
        Assert.That(FnaTensorCore.SharedBytes(p, tile, KvStagingKind.Async), Is.EqualTo(90112));
        Assert.That(FnaTensorCore.SharedBytes(p, tile), Is.EqualTo(90112), "the preferred staging is the asynchronous one");
        Assert.That(
            FnaTensorCore.Check(plain, p, tile),
            Is.EqualTo($"tile shape {tile} with D=128, Dv=128 needs 55296 bytes of shared memory (3072 static + 52224 dynamic); {plain.Name} allows {DefaultLimit}"));
        Assert.That(FnaTensorCore.Check(optIn, p, tile), Is.Null);
        Assert.That(FnaTensorCore.Staging(optIn, p, tile), Is.EqualTo(KvStagingKind.Async), "90112 bytes fit the opt-in");
        Assert.That(FnaTensorCore.Staging(CudaLike(80 * 1024), p, tile), Is.EqualTo(KvStagingKind.Elements), "a device with room for one buffer only");

        // The float32-math forward (no static shared memory): 64·129·2 + 64·256 floats.
        Assert.That(FnaForward.Check(plain, p, tile), Does.Contain("needs 131584 bytes of shared memory;").And.Contain($"allows {DefaultLimit}"));
        Assert.That(FnaForward.Check(optIn, p, tile), Is.Null);

        // TF32, 32 / 32 at D = 128: 49152 dynamic bytes on top of its static scores.
        var tf32 = new FnaTileShape(1, 1, 32, 1, 1, 32);
        Assert.That(FnaTf32.Check(plain, p, tf32), Does.Contain($"({FnaTf32.StaticSharedBytes} static + 49152 dynamic)"));
        Assert.That(FnaTf32.Check(optIn, p, tf32), Is.Null);

        // The float32-math backward at D = 64 with 64 / 16: the dK/dV kernel's 18720 floats.
        var backward = new FnaTileShape(1, 1, 64, 1, 1, 16);
        Assert.That(FnaBackward.Check(plain, Params(64, 64), backward), Does.StartWith("the backward with tile shape").And.Contain("needs 74880 bytes"));
        Assert.That(FnaBackward.Check(optIn, Params(64, 64), backward), Is.Null);

        // Block-sparse: float32-math forward tiles and the tensor-core forward.
        var sparse = new BlockSparseParams(1, 1, 1, 128, 128, 256, 256, 64, 64, 1, 1, 0.125);
        var sparseTiles = new BlockSparseTiles(64, 64, 64, 64);
        Assert.That(BlockSparseLauncher.Check(plain, sparse, sparseTiles, backward: false), Does.Contain("bytes of shared memory").And.Contain($"allows {DefaultLimit}"));
        Assert.That(BlockSparseLauncher.Check(optIn, sparse, sparseTiles, backward: false), Is.Null);
        var sparseTensorCore = new BlockSparseTensorCoreTile(64, 64);
        // The register-resident forward (D = Dv = 128, 64 / 64): Check asks for the single buffer (3072 static + (64 + 2·64)·136·2);
        // the launch double-buffers (cp.async) where (64 + 4·64)·136·2 dynamic bytes fit too.
        Assert.That(BlockSparseTensorCore.SharedBytes(sparse, sparseTensorCore, KvStagingKind.Elements), Is.EqualTo(55296));
        Assert.That(BlockSparseTensorCore.SharedBytes(sparse, sparseTensorCore, KvStagingKind.Async), Is.EqualTo(90112));
        Assert.That(BlockSparseTensorCore.SharedBytes(sparse, sparseTensorCore), Is.EqualTo(90112), "the preferred staging is the asynchronous one");
        Assert.That(BlockSparseTensorCore.Check(plain, sparse, sparseTensorCore), Does.Contain("needs 55296 bytes"));
        Assert.That(BlockSparseTensorCore.Check(optIn, sparse, sparseTensorCore), Is.Null);
        Assert.That(BlockSparseTensorCore.Staging(optIn, sparse, sparseTensorCore), Is.EqualTo(KvStagingKind.Async), "90112 bytes fit the opt-in");
        Assert.That(BlockSparseTensorCore.Staging(CudaLike(80 * 1024), sparse, sparseTensorCore), Is.EqualTo(KvStagingKind.Elements), "room for one buffer only");
        using (KvStaging.Use(KvStagingKind.Elements))
        {
            Assert.That(BlockSparseTensorCore.Staging(optIn, sparse, sparseTensorCore), Is.EqualTo(KvStagingKind.Elements), "NATTEN_KV_STAGING=elements");
        }

        // The default D = 128 tile (64 queries / 32 keys): 37888 bytes with one buffer, 3072 + (64 + 128)·136·2 = 55296 with two (opt-in).
        var sparseDefault = BlockSparseTensorCore.Tile(sparse, null, null);
        Assert.That((sparseDefault.Queries, sparseDefault.Keys), Is.EqualTo((64, 32)));
        Assert.That(BlockSparseTensorCore.Staging(plain, sparse, sparseDefault), Is.EqualTo(KvStagingKind.Elements), "two buffers need the opt-in");
        Assert.That(BlockSparseTensorCore.Staging(optIn, sparse, sparseDefault), Is.EqualTo(KvStagingKind.Async));

        // Beyond the opt-in limit too: the message names both limits.
        var huge = Params(256, 256);
        var hugeTile = new FnaTileShape(1, 1, 64, 1, 1, 128);
        Assert.That(FnaForward.Check(optIn, huge, hugeTile), Does.Contain($"allows {Sm90OptIn} with the opt-in ({DefaultLimit} without)"));
    }

    [Test]
    public void TensorCoreChecksIgnoreTheFloatKernelsSharedMemory()
    {
        // The D = 128 tensor-core default (64 queries / 32 keys) fits 48 KB; the float32-math kernel would need 98816 bytes for it.
        var plain = CudaLike(DefaultLimit);
        var p = Params(128, 128);
        var tile = FnaTensorCore.Default(1, 128);
        Assert.That(FnaForward.Check(plain, p, tile), Does.Contain("needs 98816 bytes"));
        Assert.That(FnaTensorCore.Check(plain, p, tile), Is.Null);
        Assert.That(FnaTensorCoreBackward.Check(plain, p, tile), Is.Null);

        // Double-buffered it needs (64 + 4·32)·136·2 + 3072 = 55296 bytes: within 48 KB the forward keeps one buffer (element staging).
        Assert.That(FnaTensorCore.SharedBytes(p, tile, KvStagingKind.Async), Is.EqualTo(55296));
        Assert.That(FnaTensorCore.Staging(plain, p, tile), Is.EqualTo(KvStagingKind.Elements));
        Assert.That(FnaTensorCore.Staging(CudaLike(Sm90OptIn), p, tile), Is.EqualTo(KvStagingKind.Async));

        // The generated backward the same way: one buffer 2·64 rows of 136 words (34816 bytes), two 2·32 + 2·64 rows (52224
        // bytes), plus 3072 + 1024 static (scratch, per-query LSE and D): element staging within 48 KB, cp.async with the opt-in.
        Assert.That(FnaTensorCoreBackward.RegisterWords(p, tile, KvStagingKind.Elements) * sizeof(ushort), Is.EqualTo(34816));
        Assert.That(FnaTensorCoreBackward.RegisterWords(p, tile, KvStagingKind.Async) * sizeof(ushort), Is.EqualTo(52224));
        Assert.That(FnaTensorCoreBackward.RegisterStaticSharedBytes, Is.EqualTo(4096));
        using var pinned = KvStaging.Use(KvStagingKind.Async);
        using var buffer = DeviceRuntime.Get(AcceleratorKind.Cpu).Accelerator.Allocate1D<ushort>(64);
        var (aligned, unaligned) = (buffer.View.SubView(8, 16), buffer.View.SubView(1, 16));
        Assert.That(KvStaging.Aligned(aligned), Is.True);
        Assert.That(KvStaging.Aligned(unaligned), Is.False);
        Assert.That(FnaTensorCoreBackward.Staging(plain, p, tile, aligned, aligned), Is.EqualTo(KvStagingKind.Elements));
        Assert.That(FnaTensorCoreBackward.Staging(CudaLike(Sm90OptIn), p, tile, aligned, aligned), Is.EqualTo(KvStagingKind.Async));
        Assert.That(FnaTensorCoreBackward.Staging(CudaLike(Sm90OptIn), p, tile, aligned, unaligned), Is.EqualTo(KvStagingKind.Elements), "unaligned views");
        using var elements = KvStaging.Use(KvStagingKind.Elements);
        Assert.That(FnaTensorCoreBackward.Staging(CudaLike(Sm90OptIn), p, tile, aligned, aligned), Is.EqualTo(KvStagingKind.Elements), "NATTEN_KV_STAGING=elements");
    }

    [Test]
    public void BackendAndTileRulesJudgeTheKernelTheCallTakes([Values(ElementType.Float16, ElementType.BFloat16)] ElementType type)
    {
        // Explicit tiles 64 / 32 at D = Dv = 64 on a 48 KB device: the tensor-core kernels fit them (forward and backward),
        // the float32-math kernel does not — a 16-bit call must be accepted, a float32 call refused.
        var device = CudaLike(DefaultLimit);
        var options = new NeighborhoodAttentionOptions(9) { Tiles = new FusedTiles(64, 32) };
        var shape = new AttentionShape(1, 96, 2, 64);
        var half = ProblemValidator.Validate(shape, options, type);
        var single = ProblemValidator.Validate(shape, options, ElementType.Float32);
        var p = NaiveBackend.ToParams(half);
        var tile = FusedBackend.TileShape(half, p);
        Assert.That(FnaForward.Check(device, p, tile), Does.Contain("bytes of shared memory"), "the float32 kernel cannot hold the tile");
        Assert.That(FnaTensorCoreBackward.Check(device, p, tile), Is.Null, "the tensor-core kernels can");

        var fused = new FusedBackend();
        Assert.That(fused.CanRunOn(device, half, AttentionPass.Forward, out var why), Is.True, why);
        Assert.That(fused.CanRunOn(device, half, AttentionPass.Backward, out why), Is.True, why);
        Assert.That(FusedTileRules.Check(device, half), Is.Null);
        Assert.That(fused.CanRunOn(device, single, AttentionPass.Forward, out why), Is.False);
        Assert.That(why, Does.Contain("bytes of shared memory"));
        Assert.That(FusedTileRules.Check(device, single), Does.Contain("bytes of shared memory"));
    }

    [Test]
    public void TileSearchGrowsWithTheOptInLimit()
    {
        var shape = new AttentionShape(1, (32, 32), 2, 128);
        var problem = ProblemValidator.Validate(shape, new NeighborhoodAttentionOptions(7), ElementType.Float16);
        var p = NaiveBackend.ToParams(problem);
        string Key((int[] Query, int[] Key) t) => $"{string.Join('x', t.Query)}/{string.Join('x', t.Key)}";

        var plain = FusedTileRules.SearchSpace(CudaLike(DefaultLimit), problem).Select(Key).ToHashSet();
        var optIn = FusedTileRules.SearchSpace(CudaLike(Sm90OptIn), problem);
        Assert.That(plain, Is.Not.Empty);
        Assert.That(optIn.Select(Key), Is.SupersetOf(plain));
        var larger = optIn.Where(t => !plain.Contains(Key(t))).ToArray();
        Assert.That(larger, Is.Not.Empty, "the opt-in admits more tiles");
        Assert.That(
            larger.Select(t => FnaTensorCore.SharedBytes(p, FusedTileRules.Pad(t.Query, t.Key))),
            Has.All.GreaterThan(DefaultLimit),
            "exactly the tiles beyond 48 KB are new");
    }

    /// <summary>A launch with <paramref name="bytes"/> of dynamic shared memory (in floats).</summary>
    private static KernelConfig Config(int bytes)
        => new(new Index3D(1, 1, 1), new Index3D(32, 1, 1), SharedMemoryConfig.RequestDynamic<float>(bytes / sizeof(float)));

    private static ProblemParams Params(int d, int dv)
        => new(1, 1, 1, d, dv, 0, [80], [33], [1], [1], [false], 1.0);

    /// <summary>The CPU accelerator behind a CUDA-like opt-in: 48 KB as is, <paramref name="optInLimit"/> with the opt-in.</summary>
    private static ComputeDevice CudaLike(int optInLimit, FakeDriver? driver = null)
    {
        var cpu = DeviceRuntime.Get(AcceleratorKind.Cpu).Accelerator;
        return new ComputeDevice(cpu, AcceleratorKind.Cpu, () => new SharedMemoryOptIn(cpu.Name, DefaultLimit, optInLimit, driver ?? new FakeDriver(0)));
    }

    /// <summary>Records the driver calls; slow enough that racing callers overlap.</summary>
    private sealed class FakeDriver(int staticBytes) : ISharedMemoryDriver
    {
        private int _staticQueries;

        public ConcurrentQueue<(Kernel Kernel, int Bytes)> Raised { get; } = new();

        public int StaticQueries => _staticQueries;

        public int StaticSharedBytes(Kernel kernel)
        {
            Interlocked.Increment(ref _staticQueries);
            Thread.Sleep(2);
            return staticBytes;
        }

        public void SetMaxDynamicSharedBytes(Kernel kernel, int bytes)
        {
            Thread.Sleep(5);
            Raised.Enqueue((kernel, bytes));
        }
    }
}

/// <summary>Two trivial kernels whose loaded <see cref="Kernel"/> objects stand in for CUDA functions (never launched).</summary>
public static class OptInTestKernels
{
    public static void First(ArrayView<int> data) => data[0] = 1;

    public static void Second(ArrayView<int> data) => data[0] = 2;
}
