namespace Natten.Tests.Api;

/// <summary>
/// Every rule of the one validation layer: each invalid call throws before any work, with the
/// exception type, the parameter name and a message that names the field (and axis).
/// </summary>
public sealed class ValidationTests
{
    private static readonly AttentionShape Shape2D = new(1, (8, 6), 2, 4);
    private static readonly NeighborhoodAttentionOptions K3 = new(3);

    private delegate void Call();

    public static IEnumerable<TestCaseData> InvalidCalls()
    {
        // Options: the rules of docs/SEMANTICS.md.
        yield return Invalid("kernel size missing", () => Forward(Shape2D, default), "options", "KernelSize is required");
        yield return Invalid("kernel size 1", () => Forward(Shape2D, new(1)), "options", "KernelSize on axis 0 is 1");
        yield return Invalid("kernel size 1 on axis 1", () => Forward(Shape2D, new((3, 1))), "options", "KernelSize on axis 1 is 1");
        yield return Invalid("kernel size 0", () => Forward(Shape2D, new(0)), "options", "at least 2");
        yield return Invalid("negative kernel size", () => Forward(Shape2D, new((3, -2))), "options", "axis 1");
        yield return Invalid("kernel larger than axis", () => Forward(Shape2D, new((3, 7))), "options", "axis 1 is 7 × 1 = 7, more than the axis length 6");
        yield return Invalid("kernel × dilation larger than axis", () => Forward(Shape2D, K3 with { Dilation = (3, 1) }), "options", "axis 0 is 3 × 3 = 9");
        yield return Invalid("dilation 0", () => Forward(Shape2D, K3 with { Dilation = 0 }), "options", "Dilation on axis 0 is 0");
        yield return Invalid("negative dilation", () => Forward(Shape2D, K3 with { Dilation = (1, -1) }), "options", "Dilation on axis 1 is -1");
        yield return Invalid("stride 0", () => Forward(Shape2D, K3 with { Stride = 0 }), "options", "Stride on axis 0 is 0");
        yield return Invalid("stride larger than kernel", () => Forward(Shape2D, K3 with { Stride = (1, 4) }), "options", "Stride on axis 1 is 4");
        yield return Invalid("kernel values ≠ rank", () => Forward(Shape2D, new((3, 3, 3))), "options", "KernelSize has 3 values (3x3x3) but the problem has 2 spatial axes");
        yield return Invalid("stride values ≠ rank", () => Forward(Shape2D, K3 with { Stride = AxisValues.PerAxis([1]) }), "options", "Stride has 1 values");
        yield return Invalid("dilation values ≠ rank", () => Forward(Shape2D, K3 with { Dilation = (1, 1, 1) }), "options", "Dilation has 3 values");
        yield return Invalid("causal values ≠ rank", () => Forward(Shape2D, K3 with { Causal = (true, false, true) }), "options", "Causal has 3 values");
        yield return Invalid("scale NaN", () => Forward(Shape2D, K3 with { Scale = double.NaN }), "options", "Scale is NaN");
        yield return Invalid("scale infinite", () => Forward(Shape2D, K3 with { Scale = double.PositiveInfinity }), "options", "finite and positive");
        yield return Invalid("scale zero", () => Forward(Shape2D, K3 with { Scale = 0 }), "options", "Scale is 0");
        yield return Invalid("scale negative", () => Forward(Shape2D, K3 with { Scale = -0.5 }), "options", "finite and positive");
        yield return Invalid("unknown backend", () => Forward(Shape2D, K3 with { Backend = "warp-drive" }), "options", $"'warp-drive' is not a known backend; known: {string.Join(", ", AttentionBackends.Names)}.");

        // Shape.
        yield return Invalid("spatial unspecified", () => Forward(Shape2D with { Spatial = default }, K3), "shape", "Spatial is unspecified");
        yield return Invalid("spatial extent 0", () => Forward(Shape2D with { Spatial = (8, 0) }, K3), "shape", "Spatial on axis 1 is 0");
        yield return Invalid("batch 0", () => Forward(Shape2D with { Batch = 0 }, K3), "shape", "Batch is 0");
        yield return Invalid("heads 0", () => Forward(Shape2D with { Heads = 0 }, K3), "shape", "Heads is 0");
        yield return Invalid("negative kv heads", () => Forward(Shape2D with { KvHeads = -1 }, K3), "shape", "KvHeads is -1");
        yield return Invalid("heads not a multiple of kv heads", () => Forward(new AttentionShape(1, (8, 6), 3, 4) { KvHeads = 2 }, K3), "shape", "Heads (3) is not a multiple of shape.KvHeads (2)");
        yield return Invalid("head dim 0", () => Forward(Shape2D with { HeadDim = 0 }, K3), "shape", "HeadDim is 0");
        yield return Invalid("negative value dim", () => Forward(Shape2D with { ValueDim = -3 }, K3), "shape", "ValueDim is -3");
        yield return Invalid("negative additional tokens", () => Forward(Shape2D with { AdditionalTokens = -1 }, K3), "shape", "AdditionalTokens is -1");
        yield return Invalid("additional tokens without spans", () => Forward(Shape2D with { AdditionalTokens = 2 }, K3), "shape", "use the overload with additionalKey");
        yield return Invalid("rank-1 shape to Forward2D", () => Forward2D(new AttentionShape(1, 8, 2, 4), K3), "shape", "this entry point is for rank 2");
        yield return Invalid("rank-2 shape to Forward3D", () => Forward3D(Shape2D, K3), "shape", "this entry point is for rank 3");

        // Spans: lengths, destinations, overlaps.
        yield return Invalid("query too short", () => ForwardWith(query: -1), "query", "query has 383 elements; the shape needs exactly 384");
        yield return Invalid("query too long", () => ForwardWith(query: +1), "query", "needs exactly 384");
        yield return Invalid("key wrong length", () => ForwardWith(key: -4), "key", "key has 380 elements");
        yield return Invalid("value wrong length", () => ForwardWith(value: 4), "value", "value has 388 elements");
        yield return Invalid("output too short", () => ForwardWith(output: -1), "output", "Destination output is too short: 383 elements, 384 needed");
        yield return Invalid("lse too short", () => ForwardWith(lse: -1), "logSumExp", "Destination logSumExp is too short: 95 elements, 96 needed");
        yield return Invalid("output overlaps query", OutputOverlapsQuery, "output", "output overlaps query");
        yield return Invalid("lse overlaps output", LseOverlapsOutput, "logSumExp", "logSumExp overlaps output");
        yield return Invalid("additional key wrong length", () => ForwardAdditional(additionalKey: -1), "additionalKey", "additionalKey has 15 elements");
        yield return Invalid("additional value wrong length", () => ForwardAdditional(additionalValue: 2), "additionalValue", "additionalValue has 18 elements");

        // Backward.
        yield return Invalid("backward: outputGrad wrong length", () => BackwardWith(outputGrad: -1), "outputGrad", "outputGrad has 383 elements");
        yield return Invalid("backward: lse wrong length", () => BackwardWith(lse: 1), "logSumExp", "logSumExp has 97 elements");
        yield return Invalid("backward: output wrong length", () => BackwardWith(output: -2), "output", "output has 382 elements");
        yield return Invalid("backward: queryGrad too short", () => BackwardWith(queryGrad: -1), "queryGrad", "Destination queryGrad is too short");
        yield return Invalid("backward: keyGrad too short", () => BackwardWith(keyGrad: -1), "keyGrad", "Destination keyGrad is too short");
        yield return Invalid("backward: valueGrad too short", () => BackwardWith(valueGrad: -1), "valueGrad", "Destination valueGrad is too short");
        yield return Invalid("backward: keyGrad overlaps queryGrad", KeyGradOverlapsQueryGrad, "keyGrad", "keyGrad overlaps queryGrad");
        yield return Invalid("backward: kernel size 1", () => Backward(new(1)), "options", "KernelSize on axis 0 is 1");

        // Merge.
        yield return Invalid("merge: value dim 0", () => Merge(valueDim: 0), "valueDim", "valueDim is 0");
        yield return Invalid("merge: lse lengths differ", () => Merge(lse2: 1), "lse2", "lse2 has 7 elements");
        yield return Invalid("merge: output1 wrong length", () => Merge(output1: -1), "output1", "output1 has 17 elements");
        yield return Invalid("merge: output2 wrong length", () => Merge(output2: 3), "output2", "output2 has 21 elements");
        yield return Invalid("merge: destination too short", () => Merge(output: -1), "output", "Destination output is too short");
        yield return Invalid("merge: partial overlap", MergePartialOverlap, "output", "output overlaps output1");
    }

    [TestCaseSource(nameof(InvalidCalls))]
    public void InvalidCallThrowsArgumentExceptionNamingParameterAndProblem(Action call, string paramName, string messagePart)
    {
        var ex = Assert.Throws(Is.InstanceOf<ArgumentException>(), () => call());
        var argument = (ArgumentException)ex!;
        Assert.That(argument.ParamName, Is.EqualTo(paramName));
        Assert.That(argument.Message, Does.Contain(messagePart));
    }

    [Test]
    public void ThereAreAtLeastThirtyDistinctInvalidInputs()
        => Assert.That(InvalidCalls().Select(c => c.TestName).Distinct().Count(), Is.GreaterThanOrEqualTo(30));

    [Test]
    public void ValidationHappensBeforeAnyWrite()
    {
        var output = Enumerable.Repeat(42f, 384).ToArray();
        Assert.Throws<ArgumentException>(() => NeighborhoodAttention.Forward(
            new float[384], new float[384], new float[384], Shape2D, new NeighborhoodAttentionOptions(3) { Stride = 5 }, output));
        Assert.That(output, Is.All.EqualTo(42f));
    }

    [Test]
    public void LongerDestinationsAreAcceptedAndTheTailIsUntouched()
    {
        var output = Enumerable.Repeat(42f, 390).ToArray();
        var lse = Enumerable.Repeat(42f, 100).ToArray();
        var rng = new Random(1);
        NeighborhoodAttention.Forward(
            Support.TestData.Floats(rng, 384), Support.TestData.Floats(rng, 384), Support.TestData.Floats(rng, 384), Shape2D, K3, output, lse);
        Assert.That(output[384..], Is.All.EqualTo(42f));
        Assert.That(lse[96..], Is.All.EqualTo(42f));
        Assert.That(output[..384], Has.Some.Not.EqualTo(42f));
    }

    [Test]
    public void MergeMayWriteInPlaceOverItsFirstInput()
    {
        float[] o1 = [1, 2, 3, 4];
        float[] l1 = [0, float.NegativeInfinity];
        float[] o2 = [5, 6, 7, 8];
        float[] l2 = [0, 1];
        NeighborhoodAttention.MergeAttentions(o1, l1, o2, l2, 2, o1, l1);
        Assert.That(o1, Is.EqualTo(new float[] { 3, 4, 7, 8 }));
        Assert.That(l1[0], Is.EqualTo((float)Math.Log(2)).Within(1e-6));
        Assert.That(l1[1], Is.EqualTo(1f));
    }

    private static TestCaseData Invalid(string name, Call call, string paramName, string messagePart)
        => new TestCaseData(new Action(call), paramName, messagePart).SetName($"Invalid: {name}");

    // Shape2D: B=1, 8x6 = 48 tokens, H=2, D=4 -> Q/K/V/O 384 elements, LSE 96.
    private static void Forward(AttentionShape shape, NeighborhoodAttentionOptions options)
        => NeighborhoodAttention.Forward(new float[384], new float[384], new float[384], shape, options, new float[384], new float[96]);

    private static void Forward2D(AttentionShape shape, NeighborhoodAttentionOptions options)
        => NeighborhoodAttention.Forward2D(new float[32], new float[32], new float[32], shape, options, new float[32]);

    private static void Forward3D(AttentionShape shape, NeighborhoodAttentionOptions options)
        => NeighborhoodAttention.Forward3D(new float[384], new float[384], new float[384], shape, options, new float[384]);

    private static void ForwardWith(int query = 0, int key = 0, int value = 0, int output = 0, int lse = 0)
        => NeighborhoodAttention.Forward(
            new float[384 + query], new float[384 + key], new float[384 + value], Shape2D, K3, new float[384 + output], new float[96 + lse]);

    private static void ForwardAdditional(int additionalKey = 0, int additionalValue = 0)
    {
        var shape = Shape2D with { AdditionalTokens = 2 }; // additional K/V: 1 × 2 × 2 × 4 = 16
        NeighborhoodAttention.Forward(
            new float[384], new float[384], new float[384], new float[16 + additionalKey], new float[16 + additionalValue],
            shape, K3, new float[384], new float[96]);
    }

    private static void OutputOverlapsQuery()
    {
        var buffer = new float[384 * 2];
        NeighborhoodAttention.Forward(buffer.AsSpan(0, 384), new float[384], new float[384], Shape2D, K3, buffer.AsSpan(100, 384));
    }

    private static void LseOverlapsOutput()
    {
        var buffer = new float[384];
        NeighborhoodAttention.Forward(new float[384], new float[384], new float[384], Shape2D, K3, buffer, buffer.AsSpan(0, 96));
    }

    private static void Backward(NeighborhoodAttentionOptions options)
        => BackwardWith(options: options);

    private static void BackwardWith(
        int output = 0, int lse = 0, int outputGrad = 0, int queryGrad = 0, int keyGrad = 0, int valueGrad = 0,
        NeighborhoodAttentionOptions? options = null)
        => NeighborhoodAttention.Backward(
            new float[384], new float[384], new float[384], new float[384 + output], new float[96 + lse], new float[384 + outputGrad],
            Shape2D, options ?? K3, new float[384 + queryGrad], new float[384 + keyGrad], new float[384 + valueGrad]);

    private static void KeyGradOverlapsQueryGrad()
    {
        var grads = new float[384 * 2];
        NeighborhoodAttention.Backward(
            new float[384], new float[384], new float[384], new float[384], new float[96], new float[384],
            Shape2D, K3, grads.AsSpan(0, 384), grads.AsSpan(200, 384), new float[384]);
    }

    // 6 rows of 3: outputs 18, LSE 6.
    private static void Merge(int valueDim = 3, int output1 = 0, int output2 = 0, int lse2 = 0, int output = 0)
        => NeighborhoodAttention.MergeAttentions(
            new float[18 + output1], new float[6], new float[18 + output2], new float[6 + lse2], valueDim, new float[18 + output], new float[6]);

    private static void MergePartialOverlap()
    {
        var buffer = new float[40];
        NeighborhoodAttention.MergeAttentions(buffer.AsSpan(0, 18), new float[6], new float[18], new float[6], 3, buffer.AsSpan(3, 18), new float[6]);
    }
}
