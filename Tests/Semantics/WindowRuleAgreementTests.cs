using Natten.Kernels.Common;
using Natten.Reference;

namespace Natten.Tests.Semantics;

/// <summary>
/// Exhaustive agreement between the two statements of the rule (Reference predicate, kernel key range)
/// and the properties SEMANTICS.md promises, on every valid 1D configuration up to n = 14.
/// </summary>
public sealed class WindowRuleAgreementTests
{
    private static IEnumerable<(int N, int K, int S, int D, bool Causal)> AllConfigurations(int maxN)
    {
        for (var n = 2; n <= maxN; n++)
        {
            for (var k = 2; k <= n; k++)
            {
                for (var d = 1; k * d <= n; d++)
                {
                    for (var s = 1; s <= k; s++)
                    {
                        yield return (n, k, s, d, false);
                        yield return (n, k, s, d, true);
                    }
                }
            }
        }
    }

    [Test]
    public void KeyRangeEqualsPredicateEverywhere()
    {
        var checkedWindows = 0;
        foreach (var (n, k, s, d, causal) in AllConfigurations(14))
        {
            for (var i = 0; i < n; i++)
            {
                WindowRule.KeyRange(i, n, k, s, d, causal, out var first, out var count);
                var fromRange = Enumerable.Range(0, count).Select(x => first + (x * d)).ToArray();
                var fromPredicate = Enumerable.Range(0, n).Where(j => NeighborhoodRule.AxisAllows(i, j, n, k, s, d, causal)).ToArray();
                Assert.That(fromRange, Is.EqualTo(fromPredicate), $"n={n} K={k} s={s} d={d} causal={causal} i={i}");
                checkedWindows++;
            }
        }

        Assert.That(checkedWindows, Is.GreaterThan(5000));
    }

    [Test]
    public void QueryRangeIsTheInverseNeighborhood()
    {
        foreach (var (n, k, s, d, causal) in AllConfigurations(14))
        {
            for (var j = 0; j < n; j++)
            {
                WindowRule.QueryRange(j, n, k, s, d, causal, out var first, out var count);
                var fromRange = Enumerable.Range(0, count).Select(x => first + (x * d)).ToArray();
                var fromPredicate = Enumerable.Range(0, n).Where(i => NeighborhoodRule.AxisAllows(i, j, n, k, s, d, causal)).ToArray();
                Assert.That(fromRange, Is.EqualTo(fromPredicate), $"n={n} K={k} s={s} d={d} causal={causal} key={j}");
            }
        }
    }

    [Test]
    public void NonCausalQueriesSeeExactlyKKeysOfTheirDilationGroupIncludingThemselves()
    {
        foreach (var (n, k, s, d, causal) in AllConfigurations(14).Where(c => !c.Causal))
        {
            for (var i = 0; i < n; i++)
            {
                var seen = Enumerable.Range(0, n).Where(j => NeighborhoodRule.AxisAllows(i, j, n, k, s, d, causal)).ToArray();
                Assert.That(seen, Has.Length.EqualTo(k), $"n={n} K={k} s={s} d={d} i={i}");
                Assert.That(seen.All(j => j % d == i % d), Is.True, "same dilation group");
                Assert.That(seen.Zip(seen.Skip(1), (a, b) => b - a).All(step => step == d), Is.True, "contiguous within the group");
                if (s == 1)
                {
                    Assert.That(seen, Does.Contain(i), "with stride 1 a query sees itself");
                }
            }
        }
    }

    [Test]
    public void CausalQueriesSeeThemselvesAndNothingLater()
    {
        foreach (var (n, k, s, d, causal) in AllConfigurations(14).Where(c => c.Causal))
        {
            for (var i = 0; i < n; i++)
            {
                var seen = Enumerable.Range(0, n).Where(j => NeighborhoodRule.AxisAllows(i, j, n, k, s, d, causal)).ToArray();
                Assert.That(seen, Does.Contain(i));
                Assert.That(seen.Max(), Is.EqualTo(i));
                Assert.That(seen, Has.Length.InRange(1, k));
            }
        }
    }

    [Test]
    public void QueriesOfOneStrideGroupShareOneWindow()
    {
        foreach (var (n, k, s, d, causal) in AllConfigurations(14).Where(c => c.S > 1))
        {
            for (var i = 0; i < n; i++)
            {
                for (var other = i + d; other < n; other += d)
                {
                    if ((i / d / s) != (other / d / s))
                    {
                        break;
                    }

                    WindowRule.KeyRange(i, n, k, s, d, causal, out var first, out var count);
                    WindowRule.KeyRange(other, n, k, s, d, causal, out var otherFirst, out var otherCount);
                    Assert.That(otherFirst, Is.EqualTo(first), $"n={n} K={k} s={s} d={d} causal={causal}: {i} and {other} start together");
                    if (!causal)
                    {
                        Assert.That(otherCount, Is.EqualTo(count), "non-causal: the same window");
                    }
                }
            }
        }
    }

    [Test]
    public void StrideEqualToKernelIsBlockedAttention()
    {
        foreach (var (n, k, _, _, _) in AllConfigurations(16).Where(c => c.S == c.K && c.D == 1 && !c.Causal && c.N % c.K == 0))
        {
            for (var i = 0; i < n; i++)
            {
                var seen = Enumerable.Range(0, n).Where(j => NeighborhoodRule.AxisAllows(i, j, n, k, k, 1, false));
                Assert.That(seen, Is.EqualTo(Enumerable.Range(i / k * k, k)), $"n={n} K={k} i={i}");
            }
        }
    }

    [Test]
    public void CausalStrideOneIsASlidingWindow()
    {
        foreach (var (n, k, _, _, _) in AllConfigurations(14).Where(c => c.S == 1 && c.D == 1 && c.Causal))
        {
            for (var i = 0; i < n; i++)
            {
                var seen = Enumerable.Range(0, n).Where(j => NeighborhoodRule.AxisAllows(i, j, n, k, 1, 1, true));
                var start = Math.Max(i - k + 1, 0);
                Assert.That(seen, Is.EqualTo(Enumerable.Range(start, i - start + 1)), $"n={n} K={k} i={i}");
            }
        }
    }
}
