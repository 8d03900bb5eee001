using System.Numerics;
using Natten.Backends;
using Natten.Validation;

namespace Natten.Tests.Api;

/// <summary>How the registry picks a backend, and what it says when none fits.</summary>
public sealed class BackendSelectionTests
{
    private static readonly AttentionShape Shape = new(1, 16, 2, 8);

    [Test]
    public void AutomaticChoiceTakesTheFirstBackendThatCanRun()
    {
        var registry = new BackendRegistry([new FakeBackend("fast", "needs a GPU"), new FakeBackend("slow", null), new FakeBackend("slower", null)]);
        Assert.That(registry.Choose(Problem(), null, AttentionPass.Forward).Name, Is.EqualTo("slow"));
    }

    [Test]
    public void WhenNoBackendCanRunTheErrorListsEveryReason()
    {
        var registry = new BackendRegistry([new FakeBackend("fast", "needs a GPU"), new FakeBackend("simd", "head dim 8 is too small")]);
        var ex = Assert.Throws<NotSupportedException>(() => registry.Choose(Problem(), null, AttentionPass.Forward));
        Assert.That(ex!.Message, Does.Contain("fast: needs a GPU").And.Contain("simd: head dim 8 is too small"));
    }

    [Test]
    public void ANamedBackendThatCannotRunSaysWhy()
    {
        var registry = new BackendRegistry([new FakeBackend("fast", "needs a GPU"), new FakeBackend("slow", null)]);
        var ex = Assert.Throws<NotSupportedException>(() => registry.Choose(Problem(), "FAST", AttentionPass.Forward));
        Assert.That(ex!.Message, Is.EqualTo("Backend 'fast' cannot run this problem: needs a GPU"));
    }

    [Test]
    public void BackendNamesAreCaseInsensitive()
    {
        var registry = new BackendRegistry([new FakeBackend("slow", null)]);
        Assert.That(registry.Choose(Problem(), "Slow", AttentionPass.Backward).Name, Is.EqualTo("slow"));
    }

    [Test]
    public void TheReferenceIsARealBackendAndTheLastResort()
    {
        Assert.That(AttentionBackends.Names, Does.Contain("fused").And.Contain("naive"));
        Assert.That(AttentionBackends.Names[^1], Is.EqualTo("reference"));
        Assert.That(AttentionBackends.Select(Shape, new NeighborhoodAttentionOptions(3), ElementType.Float32), Is.EqualTo(AttentionBackends.Names[0]));
        Assert.That(AttentionBackends.Select(Shape, new NeighborhoodAttentionOptions(3) { Backend = "reference" }, ElementType.Float32), Is.EqualTo("reference"));
        Assert.That(AttentionBackends.Describe("reference"), Does.Contain("double"));
    }

    [Test]
    public void TheReferenceRefusesProblemsTooLargeForPairwiseTesting()
    {
        var huge = new AttentionShape(1, (512, 512), 16, 64);
        Assert.That(AttentionBackends.CanRun("reference", huge, new NeighborhoodAttentionOptions(7), ElementType.Float32, false, out var reason), Is.False);
        Assert.That(reason, Does.Contain("every (query, key) pair"));
        var ex = Assert.Throws<NotSupportedException>(
            () => AttentionBackends.Select(huge, new NeighborhoodAttentionOptions(7) { Backend = "reference" }, ElementType.Float32));
        Assert.That(ex!.Message, Does.StartWith("Backend 'reference' cannot run this problem: it tests every (query, key) pair"));
    }

    [Test]
    public void UnknownNamesAreArgumentErrors()
    {
        var ex = Assert.Throws<ArgumentException>(() => AttentionBackends.Describe("nope"));
        Assert.That(ex!.ParamName, Is.EqualTo("name"));
        Assert.That(ex.Message, Does.Contain($"known: {string.Join(", ", AttentionBackends.Names)}."));
    }

    private static AttentionProblem Problem() => ProblemValidator.Validate(Shape, new NeighborhoodAttentionOptions(3), ElementType.Float32);

    private sealed class FakeBackend(string name, string? refusal) : IAttentionBackend
    {
        public string Name => name;

        public string Description => "test double";

        public bool CanRun(AttentionProblem problem, AttentionPass pass, out string reason)
        {
            reason = refusal ?? string.Empty;
            return refusal is null;
        }

        public void Forward<T>(AttentionProblem problem, in ForwardTensors<T> tensors)
            where T : unmanaged, IBinaryFloatingPointIeee754<T> => throw new NotSupportedException();

        public void Backward<T>(AttentionProblem problem, in BackwardTensors<T> tensors)
            where T : unmanaged, IBinaryFloatingPointIeee754<T> => throw new NotSupportedException();
    }
}
