using Natten.Cli;
using Natten.Reference;
using Natten.Tests.Support;

namespace Natten.Tests.Cli;

/// <summary><c>natten run --backward</c>: gradients through .npy files against the Reference's analytic backward.</summary>
public sealed class RunBackwardTests
{
    public static IEnumerable<TestCaseData> Backends() => AttentionBackends.Names.Select(b => new TestCaseData(b).SetName($"{{m}}({b})"));

    [TestCaseSource(nameof(Backends))]
    public void GradientsMatchReference(string backend)
    {
        using var dir = new TempDirectory();
        var rng = new Random(3);
        int[] spatial = [5, 6];
        const int batch = 1, heads = 2, kvHeads = 1, dim = 4, valueDim = 3, extra = 2;
        var q = Write(dir, "q.npy", [batch, .. spatial, heads, dim], rng);
        var k = Write(dir, "k.npy", [batch, .. spatial, kvHeads, dim], rng);
        var v = Write(dir, "v.npy", [batch, .. spatial, kvHeads, valueDim], rng);
        var ak = Write(dir, "ak.npy", [batch, extra, kvHeads, dim], rng);
        var av = Write(dir, "av.npy", [batch, extra, kvHeads, valueDim], rng);
        var dO = Write(dir, "do.npy", [batch, .. spatial, heads, valueDim], rng);

        var result = CliRunner.Run(
            "run", "--query", dir.File("q.npy"), "--key", dir.File("k.npy"), "--value", dir.File("v.npy"),
            "--additional-key", dir.File("ak.npy"), "--additional-value", dir.File("av.npy"),
            "--output", dir.File("o.npy"), "--kernel-size", "3x4", "--dilation", "1x1", "--causal", "1x0", "--backend", backend,
            "--backward", "--grad-output", dir.File("do.npy"), "--grad-query", dir.File("dq.npy"), "--grad-key", dir.File("dk.npy"),
            "--grad-value", dir.File("dv.npy"), "--grad-additional-key", dir.File("dak.npy"), "--grad-additional-value", dir.File("dav.npy"));
        result.AssertSuccess();

        var problem = new NeighborhoodProblem
        {
            Batch = batch, Spatial = spatial, Heads = heads, KvHeads = kvHeads, HeadDim = dim, ValueDim = valueDim,
            KernelSize = [3, 4], Stride = [1, 1], Dilation = [1, 1], Causal = [true, false], AdditionalTokens = extra,
        };
        var expected = ReferenceAttention.NeighborhoodBackward(
            problem, TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v), TestData.ToDouble(dO), TestData.ToDouble(ak), TestData.ToDouble(av));
        AssertFile(dir.File("dq.npy"), [batch, .. spatial, heads, dim], expected.Query);
        AssertFile(dir.File("dk.npy"), [batch, .. spatial, kvHeads, dim], expected.Key);
        AssertFile(dir.File("dv.npy"), [batch, .. spatial, kvHeads, valueDim], expected.Value);
        AssertFile(dir.File("dak.npy"), [batch, extra, kvHeads, dim], expected.AdditionalKey);
        AssertFile(dir.File("dav.npy"), [batch, extra, kvHeads, valueDim], expected.AdditionalValue);
    }

    [Test]
    public void BackwardWithoutGradOutputIsAUsageError()
    {
        using var dir = new TempDirectory();
        var rng = new Random(1);
        Write(dir, "q.npy", [1, 6, 1, 2], rng);
        var result = CliRunner.Run(
            "run", "--query", dir.File("q.npy"), "--key", dir.File("q.npy"), "--value", dir.File("q.npy"), "--output", dir.File("o.npy"),
            "--kernel-size", "3", "--backward", "--grad-query", dir.File("dq.npy"), "--grad-key", dir.File("dk.npy"), "--grad-value", dir.File("dv.npy"));
        result.AssertOneLineError(ExitCodes.Usage, "--grad-output");
    }

    [Test]
    public void GradOutputOfTheWrongShapeIsAUsageError()
    {
        using var dir = new TempDirectory();
        var rng = new Random(1);
        Write(dir, "q.npy", [1, 6, 1, 2], rng);
        Write(dir, "do.npy", [1, 5, 1, 2], rng);
        var result = CliRunner.Run(
            "run", "--query", dir.File("q.npy"), "--key", dir.File("q.npy"), "--value", dir.File("q.npy"), "--output", dir.File("o.npy"),
            "--kernel-size", "3", "--backward", "--grad-output", dir.File("do.npy"),
            "--grad-query", dir.File("dq.npy"), "--grad-key", dir.File("dk.npy"), "--grad-value", dir.File("dv.npy"));
        result.AssertOneLineError(ExitCodes.Usage, "--grad-output has shape");
        Assert.That(File.Exists(dir.File("dq.npy")), Is.False);
    }

    private static float[] Write(TempDirectory dir, string name, int[] shape, Random rng)
    {
        var data = TestData.Floats(rng, shape.Aggregate(1L, (a, b) => a * b));
        Npy.Write(dir.File(name), shape, data);
        return data;
    }

    private static void AssertFile(string path, int[] shape, double[] expected)
    {
        var array = Npy.Read(path);
        Assert.That(array.Shape, Is.EqualTo(shape), path);
        Assert.That(TestData.MaxAbsDiff(expected, array.Float32Data!), Is.LessThanOrEqualTo(1e-5), path);
    }
}

/// <summary><c>natten run --dtype</c>: inputs rounded to half or bfloat16 first, outputs float32.</summary>
public sealed class RunDtypeTests
{
    [TestCase("bf16")]
    [TestCase("fp16")]
    public void InputsAreRoundedToTheRequestedStorage(string dtype)
    {
        using var dir = new TempDirectory();
        var rng = new Random(9);
        int[] shape = [1, 6, 5, 2, 16];
        float[] Write(string name)
        {
            var data = TestData.Floats(rng, shape.Aggregate(1L, (a, b) => a * b));
            Npy.Write(dir.File(name), shape, data);
            return data;
        }

        var (q, k, v) = (Write("q.npy"), Write("k.npy"), Write("v.npy"));
        var result = CliRunner.Run(
            "run", "--query", dir.File("q.npy"), "--key", dir.File("k.npy"), "--value", dir.File("v.npy"), "--output", dir.File("o.npy"),
            "--lse", dir.File("lse.npy"), "--kernel-size", "3", "--dtype", dtype);
        result.AssertSuccess();

        float Round(float x) => dtype == "bf16" ? BFloat16Conversions.ToSingle(BFloat16Conversions.FromSingle(x)) : (float)(Half)x;
        var problem = new NeighborhoodProblem
        {
            Batch = 1, Spatial = [6, 5], Heads = 2, KvHeads = 2, HeadDim = 16, ValueDim = 16, KernelSize = [3, 3], Stride = [1, 1],
            Dilation = [1, 1], Causal = [false, false],
        };
        var expected = ReferenceAttention.Neighborhood(
            problem, TestData.ToDouble(q.Select(Round).ToArray()), TestData.ToDouble(k.Select(Round).ToArray()), TestData.ToDouble(v.Select(Round).ToArray()));
        var output = Npy.Read(dir.File("o.npy"));
        Assert.That(output.IsFloat16, Is.False);
        Assert.That(TestData.MaxAbsDiff(expected.Output, output.Float32Data!), Is.LessThanOrEqualTo(dtype == "bf16" ? 1e-2 : 2e-3));
        Assert.That(TestData.MaxAbsDiff(expected.LogSumExp, Npy.Read(dir.File("lse.npy")).Float32Data!), Is.LessThanOrEqualTo(1e-4));
    }

    [Test]
    public void UnknownDtypeIsAUsageError()
    {
        var result = CliRunner.Run("run", "--query", "q.npy", "--key", "k.npy", "--value", "v.npy", "--output", "o.npy", "--kernel-size", "3", "--dtype", "fp8");
        result.AssertOneLineError(ExitCodes.Usage, "--dtype");
    }
}
