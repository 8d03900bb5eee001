using Natten.Tests.Support;

namespace Natten.Tests.Api;

/// <summary>Useful FLOPs count only allowed (query, key) pairs: checked against a brute-force count over the Reference predicate.</summary>
public sealed class AttentionFlopsTests
{
    [Test]
    public void PlainNeighborhoodAttentionIsFourBHNKD()
    {
        var shape = new AttentionShape(2, (128, 128), 16, 64);
        Assert.That(AttentionFlops.Forward(shape, new NeighborhoodAttentionOptions(17)), Is.EqualTo(4.0 * 2 * 16 * 128 * 128 * 17 * 17 * 64));
        Assert.That(AttentionFlops.Backward(shape, new NeighborhoodAttentionOptions(17)), Is.EqualTo(2.5 * 4.0 * 2 * 16 * 128 * 128 * 17 * 17 * 64));
    }

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    [TestCase(4)]
    [TestCase(5)]
    [TestCase(6)]
    [TestCase(7)]
    [TestCase(8)]
    public void CountsExactlyTheAllowedPairs(int seed)
    {
        var problem = RandomProblem.Create(seed);
        var reference = problem.ToReference();
        long pairs = 0;
        for (var t = 0; t < reference.Tokens; t++)
        {
            for (var j = 0; j < reference.Tokens; j++)
            {
                pairs += reference.Allows(t, j) ? 1 : 0;
            }

            pairs += reference.AdditionalTokens;
        }

        var s = problem.Shape;
        var expected = 2.0 * s.Batch * s.Heads * (s.HeadDim + s.ValueDim) * pairs;
        Assert.That(AttentionFlops.Forward(s, problem.Options), Is.EqualTo(expected), problem.ToString());
    }

    [Test]
    public void InvalidProblemsAreRejected()
        => Assert.Throws<ArgumentException>(() => AttentionFlops.Forward(new AttentionShape(1, 4, 1, 8), new NeighborhoodAttentionOptions(5)));
}
