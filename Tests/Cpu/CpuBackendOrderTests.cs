using System.Numerics;
using Natten.Backends;
using Natten.Kernels.Runtime;
using Natten.Validation;

namespace Natten.Tests.Cpu;

/// <summary>
/// The automatic choice by preference: ILGPU backends first on a GPU, the <c>cpu</c> backend first
/// without one (ahead of ILGPU's CPU accelerator), the reference last.
/// </summary>
public sealed class CpuBackendOrderTests
{
    private static readonly AttentionShape Shape = new(1, 16, 2, 8);

    [Test]
    public void RegistryOrdersByPreferenceAndKeepsRegistrationOrderForTies()
    {
        var registry = new BackendRegistry(
        [
            new FakeBackend("last", BackendPreference.LastResort), new FakeBackend("device", BackendPreference.CpuAccelerator),
            new FakeBackend("simd", BackendPreference.Cpu), new FakeBackend("gpu-a", BackendPreference.Gpu),
            new FakeBackend("gpu-b", BackendPreference.Gpu),
        ]);
        Assert.That(registry.Backends.Select(b => b.Name), Is.EqualTo(new[] { "gpu-a", "gpu-b", "simd", "device", "last" }));
        var problem = ProblemValidator.Validate(Shape, new NeighborhoodAttentionOptions(3), ElementType.Float32);
        Assert.That(registry.Choose(problem, null, AttentionPass.Forward).Name, Is.EqualTo("gpu-a"));
    }

    [Test]
    public void CpuComesBeforeTheCpuAcceleratorAndAfterAGpu()
    {
        var names = AttentionBackends.Names;
        Assert.That(names, Does.Contain("cpu"));
        Assert.That(names[^1], Is.EqualTo("reference"));
        var onGpu = BackendPreference.OfDeviceBackend() == BackendPreference.Gpu;
        var cpu = names.ToList().IndexOf("cpu");
        var naive = names.ToList().IndexOf("naive");
        Assert.That(onGpu ? naive < cpu : cpu < naive, Is.True, string.Join(", ", names));
        if (!onGpu)
        {
            Assert.That(names[0], Is.EqualTo("cpu"));
            Assert.That(AttentionBackends.Select(Shape, new NeighborhoodAttentionOptions(3), ElementType.Float16, backward: true), Is.EqualTo("cpu"));
        }
    }

    [Test]
    public void DeviceBackendsRankByTheDefaultAccelerator()
    {
        var expected = DeviceRuntime.Default.Kind is AcceleratorKind.Cuda or AcceleratorKind.OpenCL
            ? BackendPreference.Gpu
            : BackendPreference.CpuAccelerator;
        foreach (var backend in BackendRegistry.Default.Backends.OfType<IDeviceAttentionBackend>())
        {
            Assert.That(((IAttentionBackend)backend).Preference, Is.EqualTo(expected), backend.Name);
        }
    }

    [Test]
    public void CpuCanRunEveryElementTypeAndPass()
    {
        foreach (var type in new[] { ElementType.Float32, ElementType.Float16 })
        {
            foreach (var backward in new[] { false, true })
            {
                Assert.That(AttentionBackends.CanRun("cpu", Shape, new NeighborhoodAttentionOptions(3), type, backward, out var reason), Is.True, reason);
            }
        }

        Assert.That(AttentionBackends.Describe("cpu"), Does.Contain("SIMD"));
    }

    [Test]
    public void CpuRefusesOnlyProblemsWhoseBuffersExceedADotNetArray()
    {
        var huge = new AttentionShape(1, (512, 512), 64, 128);
        Assert.That(AttentionBackends.CanRun("cpu", huge, new NeighborhoodAttentionOptions(7), ElementType.Float16, false, out var reason), Is.False);
        Assert.That(reason, Does.Contain("floats"));
        var large = new AttentionShape(1, (512, 512), 16, 64);
        Assert.That(AttentionBackends.CanRun("cpu", large, new NeighborhoodAttentionOptions(7), ElementType.Float32, true, out reason), Is.True, reason);
    }

    private sealed class FakeBackend(string name, int preference) : IAttentionBackend
    {
        public string Name => name;

        public string Description => "test double";

        public int Preference => preference;

        public bool CanRun(AttentionProblem problem, AttentionPass pass, out string reason)
        {
            reason = string.Empty;
            return true;
        }

        public void Forward<T>(AttentionProblem problem, in ForwardTensors<T> tensors)
            where T : unmanaged, IBinaryFloatingPointIeee754<T> => throw new NotSupportedException();

        public void Backward<T>(AttentionProblem problem, in BackwardTensors<T> tensors)
            where T : unmanaged, IBinaryFloatingPointIeee754<T> => throw new NotSupportedException();
    }
}
