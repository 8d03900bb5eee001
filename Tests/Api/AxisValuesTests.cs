namespace Natten.Tests.Api;

public sealed class AxisValuesTests
{
    [Test]
    public void ScalarsApplyToEveryAxisAndTuplesPerAxis()
    {
        AxisValues scalar = 7;
        AxisValues pair = (7, 5);
        Assert.That(scalar.IsUniform && scalar[0] == 7 && scalar[2] == 7, Is.True);
        Assert.That(pair.IsUniform, Is.False);
        Assert.That((pair.Count, pair[0], pair[1]), Is.EqualTo((2, 7, 5)));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = pair[2]);
        Assert.That(default(AxisValues).IsSpecified, Is.False);
    }

    [TestCase("7", "7", 1, true)]
    [TestCase("7x5", "7x5", 2, false)]
    [TestCase("3X4x5", "3x4x5", 3, false)]
    public void ParsesXSeparatedValues(string text, string roundTrip, int count, bool uniform)
    {
        var values = AxisValues.Parse(text);
        Assert.That((values.ToString(), values.Count, values.IsUniform), Is.EqualTo((roundTrip, count, uniform)));
    }

    [TestCase("")]
    [TestCase("7x")]
    [TestCase("axb")]
    [TestCase("1x2x3x4")]
    [TestCase("7.5")]
    public void RejectsMalformedText(string text) => Assert.Throws<FormatException>(() => AxisValues.Parse(text));

    [TestCase("1", true, true)]
    [TestCase("0x1", false, true)]
    [TestCase("true x false", true, false)]
    public void ParsesCausalFlags(string text, bool axis0, bool axis1)
    {
        var flags = AxisFlags.Parse(text);
        Assert.That((flags[0], flags[1]), Is.EqualTo((axis0, axis1)));
    }

    [TestCase("2")]
    [TestCase("0x-1")]
    [TestCase("yes")]
    public void RejectsNonBinaryFlags(string text) => Assert.Throws<FormatException>(() => AxisFlags.Parse(text));

    [Test]
    public void OptionsAreValueEqualRecords()
    {
        var a = new NeighborhoodAttentionOptions((7, 7)) { Dilation = 2, Causal = (true, false) };
        var b = new NeighborhoodAttentionOptions((7, 7)) { Dilation = 2, Causal = (true, false) };
        Assert.That(a, Is.EqualTo(b));
        Assert.That(a with { Stride = 2 }, Is.Not.EqualTo(b));
    }

    [Test]
    public void ShapeDefaultsKvHeadsAndValueDim()
    {
        var shape = new AttentionShape(1, (8, 8), 4, 32);
        Assert.That((shape.KvHeads, shape.ValueDim, shape.Rank), Is.EqualTo((4, 32, 2)));
        Assert.That((shape with { KvHeads = 2, ValueDim = 16 }).KvHeads, Is.EqualTo(2));
    }
}
