using ILGPU.Runtime;
using Natten.Backends;
using Natten.Kernels.Cuda;
using Natten.Kernels.Fused;
using Natten.Kernels.Runtime;
using Natten.Reference;
using Natten.Validation;

namespace Natten.Tests.Kernels;

/// <summary>
/// A tensor-core forward whose tile needs more than 48 KB of shared memory (D = 128, 64 queries / 64 keys: 55296 bytes) against
/// the Reference. On CUDA this is the launch the driver opt-in (<see cref="ComputeDevice.PrepareSharedMemory"/>) exists for: without
/// it the launch fails. Not run on a GPU in this repository yet: without one the CUDA case reports as ignored. The CPU case runs the
/// same tile through the emulation (no limit there), so the case itself is known to be right.
/// </summary>
[TestFixtureSource(nameof(Accelerators))]
public sealed class SharedMemoryOptInTests(AcceleratorKind kind)
{
    private const int DefaultCudaLimit = 48 * 1024;

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
    public void TensorCoreForwardBeyond48KilobytesFollowsTheToleranceRule()
    {
        var reference = new NeighborhoodProblem
        {
            Batch = 1, Spatial = [80], Heads = 1, KvHeads = 1, HeadDim = 128, ValueDim = 128, KernelSize = [33],
            Stride = [1], Dilation = [1], Causal = [false],
        };
        var tiles = new FusedTiles(AxisValues.PerAxis([64]), AxisValues.PerAxis([64]));
        var (shape, options) = TensorCoreTests.Describe(reference, tiles);
        var problem = ProblemValidator.Validate(shape, options, ElementType.Float16);
        var p = NaiveBackend.ToParams(problem);
        var device = DeviceRuntime.Get(kind);
        var bytes = FnaTensorCore.SharedBytes(p, FusedTileRules.TileShape(problem));
        Assert.That(bytes, Is.GreaterThan(DefaultCudaLimit), "the tile needs more than CUDA's 48 KB default");
        if (bytes > device.MaxSharedBytesPerGroup)
        {
            Assert.Ignore($"{device.Name} allows {device.MaxSharedBytesPerGroup} bytes of shared memory per group; this tile needs {bytes}.");
        }

        RegisterTensorCoreTests.RunAgainstReference(kind, reference, tiles, bfloat16: false, RegisterTensorCoreTests.Visits.Masked);

        if (kind == AcceleratorKind.Cuda)
        {
            Assert.That(device.Accelerator.MaxSharedMemoryPerGroup, Is.LessThan(bytes), "ILGPU's own limit would have refused the tile");
            var launcher = device.Kernels(a => new FnaTensorCoreKernelSet<Fp16Format>(a)).Registers(p.HeadDim, FragmentLoading.Current, FnaTensorCore.Staging(device, p, FusedTileRules.TileShape(problem))).Launch;
            Assert.That(device.SharedMemory?.IsOptedIn(launcher.GetKernel()), Is.True, "the kernel's dynamic shared memory limit was raised");
        }
    }
}
