using Natten.Kernels.Fused;
using Natten.Kernels.Runtime;
using Natten.Validation;

namespace Natten.Tests.Api;

/// <summary>
/// <see cref="FusedTuning.Candidates"/> searches the tiles of the kernel the call would use: for 16-bit storage
/// with tensor-core head dims only tiles the tensor-core kernel accepts (so the profiler's --optimize does not
/// time the float32-math fallback), for float32 the float32-math kernel's, and with TF32 allowed the TF32 kernel's.
/// </summary>
public sealed class FusedTuningSearchTests
{
    private static readonly AttentionShape _shape = new(1, (32, 32), 2, 64);
    private static readonly NeighborhoodAttentionOptions _options = new(7);

    [TestCase(ElementType.Float16)]
    [TestCase(ElementType.BFloat16)]
    public void SixteenBitSearchStaysOnTheTensorCoreKernel(ElementType type)
    {
        var candidates = FusedTuning.Candidates(_shape, _options, type);
        Assert.That(candidates, Is.Not.Empty);
        var device = DeviceRuntime.Default;
        foreach (var tiles in candidates)
        {
            var problem = ProblemValidator.Validate(_shape, _options with { Tiles = tiles }, type);
            var p = Natten.Backends.NaiveBackend.ToParams(problem);
            Assert.That(FnaTensorCore.Check(device, p, FusedTileRules.TileShape(problem)), Is.Null, $"{tiles.ToArgument()} must take the tensor-core kernel");
        }
    }

    [Test]
    public void Float32SearchIncludesTilesTheTensorCoreKernelRejects()
    {
        // The float32-math kernel has no multiple-of-16 rule: its search space is wider (KV sub-tiles of 8 keys).
        var candidates = FusedTuning.Candidates(_shape, _options, ElementType.Float32);
        Assert.That(candidates.Select(t => t.KeyValue[0] * t.KeyValue[1]), Has.Some.EqualTo(8));
        Assert.That(FusedTuning.Candidates(_shape, _options, ElementType.Float16).Select(t => t.KeyValue[0] * t.KeyValue[1]), Has.All.Matches<int>(k => k % 16 == 0));
    }

    [Test]
    public void Tf32SearchStaysOnTheTf32Kernel()
    {
        var options = _options with { AllowTf32 = true };
        var candidates = FusedTuning.Candidates(_shape, options, ElementType.Float32);
        Assert.That(candidates, Is.Not.Empty);
        var device = DeviceRuntime.Default;
        foreach (var tiles in candidates)
        {
            var problem = ProblemValidator.Validate(_shape, options with { Tiles = tiles }, ElementType.Float32);
            Assert.That(FnaTf32.Check(device, Natten.Backends.NaiveBackend.ToParams(problem), FusedTileRules.TileShape(problem)), Is.Null, tiles.ToArgument());
        }
    }
}
