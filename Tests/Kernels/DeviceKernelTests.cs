using Natten.Reference;
using Natten.Tests.Semantics;
using Natten.Tests.Support;

namespace Natten.Tests.Kernels;

/// <summary>
/// The ILGPU backends' kernels on every accelerator kind, through the device-tensor API: the CPU
/// accelerator always; CUDA and OpenCL are reported as ignored (not passed) where this machine has none.
/// A pass a backend does not implement yet is reported as ignored with the backend's reason.
/// </summary>
[TestFixtureSource(nameof(Fixtures))]
public sealed class DeviceKernelTests(AcceleratorKind kind, string backend)
{
    private AttentionDevice _device = null!;

    public static IEnumerable<TestFixtureData> Fixtures()
    {
        foreach (var backend in new[] { "fused", "naive" })
        {
            foreach (var kind in new[] { AcceleratorKind.Cpu, AcceleratorKind.Cuda, AcceleratorKind.OpenCL })
            {
                yield return new TestFixtureData(kind, backend);
            }
        }
    }

    public static IEnumerable<TestCaseData> Seeds()
        => Enumerable.Range(1, TestData.SweepCount(quick: 60, extended: 1000)).Select(s => new TestCaseData(s).SetName($"{{m}}(seed {s})"));

    public static IEnumerable<TestCaseData> EdgeTable() => SemanticsTableTests.Tables().Select(c => new TestCaseData(c.Arguments.Take(5).ToArray()).SetName(c.TestName!.Replace("{m}", "{m}")));

    [SetUp]
    public void SelectDevice()
    {
        if (!AttentionDevice.IsAvailable(kind))
        {
            Assert.Ignore($"No {kind} accelerator on this machine.");
        }

        _device = AttentionDevice.Get(kind);
    }

    [TestCaseSource(nameof(Seeds))]
    public void ForwardFloat32FollowsTheToleranceRule(int seed)
    {
        var problem = RandomProblem.Create(seed);
        var reference = problem.ToReference();
        var (q, k, v, ak, av) = Inputs(problem, seed);
        var (output, lse) = RunForward(problem, q, k, v, ak, av);

        var expected = ReferenceAttention.Neighborhood(
            reference, TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v), Nullable(ak), Nullable(av));
        var plain = PlainAttention.Forward(reference, q, k, v, ak, av);
        Tolerance.AssertRule(expected.Output, output, plain.Output, Tolerance.Float32Floor, $"output, {problem}");
        Tolerance.AssertRule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, $"lse, {problem}");
    }

    [TestCaseSource(nameof(Seeds))]
    public void ForwardFloat16FollowsTheToleranceRule(int seed)
    {
        var problem = RandomProblem.Create(seed + 20000);
        var reference = problem.ToReference();
        var (qf, kf, vf, akf, avf) = Inputs(problem, seed);
        var (q, k, v, ak, av) = (ToHalf(qf), ToHalf(kf), ToHalf(vf), ToHalf(akf), ToHalf(avf));
        var s = problem.Shape;
        using var dq = _device.Upload<Half>(q, q.Length);
        using var dk = _device.Upload<Half>(k, k.Length);
        using var dv = _device.Upload<Half>(v, v.Length);
        using var dak = _device.Upload<Half>(ak, ak.Length);
        using var dav = _device.Upload<Half>(av, av.Length);
        using var dout = _device.Allocate<Half>(q.Length / s.HeadDim * s.ValueDim);
        using var dlse = _device.Allocate<float>(q.Length / s.HeadDim);
        NeighborhoodAttention.Forward(dq, dk, dv, dak, dav, s, problem.Options with { Backend = backend }, dout, dlse);

        // Reference and plain implementation both see the half-rounded inputs; the plain output is rounded to half like the kernel's.
        var (qh, kh, vh, akh, avh) = (FromHalf(q), FromHalf(k), FromHalf(v), FromHalf(ak), FromHalf(av));
        var expected = ReferenceAttention.Neighborhood(
            reference, TestData.ToDouble(qh), TestData.ToDouble(kh), TestData.ToDouble(vh), Nullable(akh), Nullable(avh));
        var plain = PlainAttention.Forward(reference, qh, kh, vh, akh, avh);
        Tolerance.AssertRule(expected.Output, FromHalf(dout.ToArray()), FromHalf(ToHalf(plain.Output)), Tolerance.Float16Floor, $"output, {problem}");
        Tolerance.AssertRule(expected.LogSumExp, dlse.ToArray(), plain.Lse, Tolerance.Float32Floor, $"lse, {problem}");
    }

    [TestCaseSource(nameof(Seeds))]
    public void BackwardFloat32MatchesReference(int seed)
    {
        var problem = RandomProblem.Create(seed + 40000, maxTokens: 48);
        RequireBackward(problem);
        var reference = problem.ToReference();
        var (q, k, v, ak, av) = Inputs(problem, seed);
        var (output, lse) = RunForward(problem, q, k, v, ak, av);
        var dO = TestData.Floats(new Random(seed), output.Length);
        var s = problem.Shape;
        using var tq = _device.Upload<float>(q, q.Length);
        using var tk = _device.Upload<float>(k, k.Length);
        using var tv = _device.Upload<float>(v, v.Length);
        using var tak = s.AdditionalTokens > 0 ? _device.Upload<float>(ak, ak.Length) : null;
        using var tav = s.AdditionalTokens > 0 ? _device.Upload<float>(av, av.Length) : null;
        using var to = _device.Upload<float>(output, output.Length);
        using var tlse = _device.Upload<float>(lse, lse.Length);
        using var tdO = _device.Upload<float>(dO, dO.Length);
        using var dq = _device.Allocate<float>(q.Length);
        using var dk = _device.Allocate<float>(k.Length);
        using var dv = _device.Allocate<float>(v.Length);
        using var dak = s.AdditionalTokens > 0 ? _device.Allocate<float>(ak.Length) : null;
        using var dav = s.AdditionalTokens > 0 ? _device.Allocate<float>(av.Length) : null;
        NeighborhoodAttention.Backward(tq, tk, tv, to, tlse, tdO, s, problem.Options with { Backend = backend }, dq, dk, dv, tak, tav, dak, dav);

        var expected = ReferenceAttention.NeighborhoodBackward(
            reference, TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v), TestData.ToDouble(dO), Nullable(ak), Nullable(av));
        Assert.That(TestData.MaxAbsDiff(expected.Query, dq.ToArray()), Is.LessThanOrEqualTo(Tolerance.Float32Gradient), $"dQ, {problem}");
        Assert.That(TestData.MaxAbsDiff(expected.Key, dk.ToArray()), Is.LessThanOrEqualTo(Tolerance.Float32Gradient), $"dK, {problem}");
        Assert.That(TestData.MaxAbsDiff(expected.Value, dv.ToArray()), Is.LessThanOrEqualTo(Tolerance.Float32Gradient), $"dV, {problem}");
        if (s.AdditionalTokens > 0)
        {
            Assert.That(TestData.MaxAbsDiff(expected.AdditionalKey, dak!.ToArray()), Is.LessThanOrEqualTo(Tolerance.Float32Gradient), $"d(additional K), {problem}");
            Assert.That(TestData.MaxAbsDiff(expected.AdditionalValue, dav!.ToArray()), Is.LessThanOrEqualTo(Tolerance.Float32Gradient), $"d(additional V), {problem}");
        }
    }

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    [TestCase(4)]
    public void BackwardFloat16MatchesReferenceOnRoundedInputs(int seed)
    {
        var problem = RandomProblem.Create(seed + 60000, maxTokens: 32, allowAdditional: false);
        RequireBackward(problem);
        var (qf, kf, vf, _, _) = Inputs(problem, seed);
        var (q, k, v) = (ToHalf(qf), ToHalf(kf), ToHalf(vf));
        var s = problem.Shape;
        var rows = q.Length / s.HeadDim;
        var output = new Half[rows * s.ValueDim];
        var lse = new float[rows];
        var options = problem.Options with { Backend = backend };
        NeighborhoodAttention.Forward(q, k, v, s, options, output, lse);
        var dO = ToHalf(TestData.Floats(new Random(seed), output.Length));
        var (dq, dk, dv) = (new Half[q.Length], new Half[k.Length], new Half[v.Length]);
        NeighborhoodAttention.Backward(q, k, v, output, lse, dO, s, options, dq, dk, dv);
        var expected = ReferenceAttention.NeighborhoodBackward(
            problem.ToReference(), TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v), TestData.ToDouble(dO));
        Assert.That(TestData.MaxAbsDiff(expected.Query, FromHalf(dq)), Is.LessThanOrEqualTo(Tolerance.Float16Gradient), $"dQ, {problem}");
        Assert.That(TestData.MaxAbsDiff(expected.Key, FromHalf(dk)), Is.LessThanOrEqualTo(Tolerance.Float16Gradient), $"dK, {problem}");
        Assert.That(TestData.MaxAbsDiff(expected.Value, FromHalf(dv)), Is.LessThanOrEqualTo(Tolerance.Float16Gradient), $"dV, {problem}");
    }

    /// <summary>The hand-worked 1D windows of the semantics table, as whole attention problems.</summary>
    [TestCaseSource(nameof(EdgeTable))]
    public void EdgeTableProblemsMatchReference(int n, int kernel, int stride, int dilation, bool causal)
    {
        var shape = new AttentionShape(2, n, 2, 8) { KvHeads = 1 };
        var options = new NeighborhoodAttentionOptions(kernel) { Stride = stride, Dilation = dilation, Causal = causal };
        var problem = new RandomProblem(shape, options);
        var (q, k, v, ak, av) = Inputs(problem, n * kernel);
        var (output, lse) = RunForward(problem, q, k, v, ak, av);
        var expected = ReferenceAttention.Neighborhood(problem.ToReference(), TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v));
        Assert.That(TestData.MaxAbsDiff(expected.Output, output), Is.LessThanOrEqualTo(Tolerance.Float32));
        Assert.That(TestData.MaxAbsDiff(expected.LogSumExp, lse), Is.LessThanOrEqualTo(Tolerance.Float32));
    }

    [Test]
    public void NaNInOneKeyReachesOnlyTheQueriesThatSeeIt()
    {
        var shape = new AttentionShape(1, (6, 7), 1, 4);
        var options = new NeighborhoodAttentionOptions(3) { Backend = backend };
        var problem = new RandomProblem(shape, options);
        var (q, k, v, ak, av) = Inputs(problem, 9);
        const int poisoned = 17;
        k[(poisoned * 4) + 2] = float.NaN;
        var (output, lse) = RunForward(problem, q, k, v, ak, av);
        var reference = problem.ToReference();
        for (var t = 0; t < 42; t++)
        {
            var affected = reference.Allows(t, poisoned);
            Assert.That(output.AsSpan(t * 4, 4).ToArray().Any(float.IsNaN), Is.EqualTo(affected), $"output of query {t}");
            Assert.That(float.IsNaN(lse[t]), Is.EqualTo(affected), $"lse of query {t}");
        }
    }

    [Test]
    public void HugeLogitsStayFiniteAndCorrect()
    {
        var shape = new AttentionShape(1, 8, 2, 1) { KvHeads = 1 };
        var options = new NeighborhoodAttentionOptions(3) { Scale = 1, Causal = false };
        var problem = new RandomProblem(shape, options);
        float[] q = [100, -100, 100, 100, -100, 100, 100, -100, 100, 100, -100, 100, 100, -100, 100, 100];
        float[] k = [100, -100, 100, 100, -100, 100, -100, 100];
        var v = Enumerable.Range(0, 8).Select(i => (float)i).ToArray();
        var (output, lse) = RunForward(problem, q, k, v, [], []);
        var expected = ReferenceAttention.Neighborhood(problem.ToReference(), TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v));
        Assert.That(output.All(float.IsFinite) && lse.All(float.IsFinite), Is.True, "no NaN or infinity from the kernel itself");
        Assert.That(TestData.MaxAbsDiff(expected.Output, output), Is.LessThanOrEqualTo(1e-5));
        Assert.That(TestData.MaxAbsDiff(expected.LogSumExp, lse), Is.LessThanOrEqualTo(2e-3)); // |LSE| = 1e4: a few float ulps
    }

    [Test]
    public void TensorsOfTheWrongLengthAreRejectedBeforeLaunch()
    {
        var shape = new AttentionShape(1, (4, 4), 2, 8);
        using var q = _device.Allocate<float>(256);
        using var shortKey = _device.Allocate<float>(255);
        using var o = _device.Allocate<float>(256);
        var ex = Assert.Throws<ArgumentException>(() => NeighborhoodAttention.Forward(q, shortKey, q, shape, new NeighborhoodAttentionOptions(3), o));
        Assert.That(ex!.ParamName, Is.EqualTo("key"));
    }

    [Test]
    public void ADestinationThatIsAnInputIsRejected()
    {
        var shape = new AttentionShape(1, (4, 4), 2, 8);
        using var q = _device.Allocate<float>(256);
        var ex = Assert.Throws<ArgumentException>(() => NeighborhoodAttention.Forward(q, q, q, shape, new NeighborhoodAttentionOptions(3), q));
        Assert.That(ex!.Message, Does.Contain("output overlaps query"));
    }

    [Test]
    public void DisposedTensorsAreRejected()
    {
        var shape = new AttentionShape(1, (4, 4), 2, 8);
        using var q = _device.Allocate<float>(256);
        using var o = _device.Allocate<float>(256);
        var k = _device.Allocate<float>(256);
        k.Dispose();
        Assert.Throws<ObjectDisposedException>(() => NeighborhoodAttention.Forward(q, k, q, shape, new NeighborhoodAttentionOptions(3), o));
        Assert.Throws<ObjectDisposedException>(() => k.ToArray());
    }

    [Test]
    public void TheReferenceBackendDoesNotTakeDeviceTensors()
    {
        var shape = new AttentionShape(1, (4, 4), 2, 8);
        using var q = _device.Allocate<float>(256);
        using var o = _device.Allocate<float>(256);
        var ex = Assert.Throws<NotSupportedException>(
            () => NeighborhoodAttention.Forward(q, q, q, shape, new NeighborhoodAttentionOptions(3) { Backend = "reference" }, o));
        Assert.That(ex!.Message, Does.Contain("host memory only"));
    }

    [Test]
    public void UploadAndDownloadRoundTripWithShape()
    {
        float[] data = [1, 2, 3, 4, 5, 6];
        using var tensor = _device.Upload<float>(data, 2, 3);
        Assert.That(tensor.Shape, Is.EqualTo(new[] { 2, 3 }));
        Assert.That(tensor.ToArray(), Is.EqualTo(data));
        Assert.Throws<ArgumentException>(() => _device.Upload<float>(data, 4, 2));
        Assert.Throws<ArgumentException>(() => tensor.CopyTo(new float[5]));
    }

    private void RequireBackward(RandomProblem problem)
    {
        if (!AttentionBackends.CanRun(backend, problem.Shape, problem.Options, ElementType.Float32, backward: true, out var reason))
        {
            Assert.Ignore($"{backend}: {reason}");
        }
    }

    private (float[] Output, float[] Lse) RunForward(RandomProblem problem, float[] q, float[] k, float[] v, float[] ak, float[] av)
    {
        var s = problem.Shape;
        using var dq = _device.Upload<float>(q, q.Length);
        using var dk = _device.Upload<float>(k, k.Length);
        using var dv = _device.Upload<float>(v, v.Length);
        using var dout = _device.Allocate<float>(q.Length / s.HeadDim * s.ValueDim);
        using var dlse = _device.Allocate<float>(q.Length / s.HeadDim);
        var options = problem.Options with { Backend = backend };
        if (s.AdditionalTokens > 0)
        {
            using var dak = _device.Upload<float>(ak, ak.Length);
            using var dav = _device.Upload<float>(av, av.Length);
            NeighborhoodAttention.Forward(dq, dk, dv, dak, dav, s, options, dout, dlse);
        }
        else
        {
            NeighborhoodAttention.Forward(dq, dk, dv, s, options, dout, dlse);
        }

        return (dout.ToArray(), dlse.ToArray());
    }

    private static (float[] Q, float[] K, float[] V, float[] Ak, float[] Av) Inputs(RandomProblem problem, int seed)
    {
        var s = problem.Shape;
        var rng = new Random(seed);
        var rows = (long)s.Batch * Enumerable.Range(0, s.Rank).Aggregate(1, (n, a) => n * s.Spatial[a]);
        var extra = (long)s.Batch * s.AdditionalTokens;
        return (TestData.Floats(rng, rows * s.Heads * s.HeadDim), TestData.Floats(rng, rows * s.KvHeads * s.HeadDim),
                TestData.Floats(rng, rows * s.KvHeads * s.ValueDim), TestData.Floats(rng, extra * s.KvHeads * s.HeadDim),
                TestData.Floats(rng, extra * s.KvHeads * s.ValueDim));
    }

    private static double[]? Nullable(float[] data) => data.Length == 0 ? null : TestData.ToDouble(data);

    private static Half[] ToHalf(float[] data) => data.Select(x => (Half)x).ToArray();

    private static float[] FromHalf(Half[] data) => data.Select(x => (float)x).ToArray();
}
