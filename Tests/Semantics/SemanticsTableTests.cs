using Natten.Kernels.Common;
using Natten.Reference;

namespace Natten.Tests.Semantics;

/// <summary>
/// Windows worked out by hand from docs/SEMANTICS.md (the derivations are in the comments and in
/// docs/SEMANTICS.md's worked examples), checked against both statements of the rule: the
/// Reference's (query, key) predicate and the kernels' key-range form.
/// </summary>
public sealed class SemanticsTableTests
{
    /// <summary>(n, K, s, d, causal) and, per query i, the keys it sees.</summary>
    public static IEnumerable<TestCaseData> Tables()
    {
        // Classic NA, odd K: left = 1, start = clamp(i - 1, 0, 4): shifted inward at both borders.
        yield return Case("border shift", 7, 3, 1, 1, false, "012 012 123 234 345 456 456");

        // Even K = 4: left = 2, right = 1; start = clamp(i - 2, 0, 4).
        yield return Case("even kernel", 8, 4, 1, 1, false, "0123 0123 0123 1234 2345 3456 4567 4567");

        // s = K = 3 (blocked): leaders 1, 4, 7 -> starts 0, 3, clamp(6, 0, 5) = 5 (last block shifted).
        yield return Case("stride = kernel, remainder", 8, 3, 3, 1, false, "012 012 012 345 345 345 567 567");

        // s = 2, K = 3, n = 9: leaders 1, 3, 5, 7, min(9, 8) = 8 -> starts 0, 2, 4, 6, clamp(7, 0, 6) = 6.
        yield return Case("stride leaders", 9, 3, 2, 1, false, "012 012 234 234 456 456 678 678 678");

        // s = 2, even K = 4: leaders 1, 3, 5, 7 -> starts clamp(p - 2, 0, 4) = 0, 1, 3, 4.
        yield return Case("stride with even kernel", 8, 4, 2, 1, false, "0123 0123 1234 1234 3456 3456 4567 4567");

        // d = 2, n = 7: group 0 = {0,2,4,6} (L = 4), group 1 = {1,3,5} (L = 3, the remainder); K = 2, left = 1.
        yield return Case("dilation with remainder", 7, 2, 1, 2, false, "02 13 02 13 24 35 46");

        // d = 3, K = 3, n = 9: three groups of 3 keys each; every query sees its whole group.
        yield return Case("dilation = n / K", 9, 3, 1, 3, false, "036 147 258 036 147 258 036 147 258");

        // Causal, s = 1: start = max(i - 2, 0), end = i (truncated at the start, never shifted).
        yield return Case("causal truncation", 5, 3, 1, 1, true, "0 01 012 123 234");

        // Causal, s = 2, K = 3: leaders 1, 3, 5 -> starts 0, 1, 3; each query stops at itself.
        yield return Case("causal stride", 6, 3, 2, 1, true, "0 01 12 123 34 345");

        // Causal, d = 3, K = 2, n = 7: groups {0,3,6}, {1,4}, {2,5}; start = max(i' - 1, 0).
        yield return Case("causal dilation", 7, 2, 1, 3, true, "0 1 2 03 14 25 36");

        // K = n, non-causal: everyone sees everything.
        yield return Case("kernel = length", 5, 5, 1, 1, false, "01234 01234 01234 01234 01234");

        // K = n, causal: plain causal attention.
        yield return Case("causal kernel = length", 5, 5, 1, 1, true, "0 01 012 0123 01234");
    }

    [TestCaseSource(nameof(Tables))]
    public void ReferencePredicateMatchesTable(int n, int kernel, int stride, int dilation, bool causal, int[][] expected)
    {
        for (var i = 0; i < n; i++)
        {
            var seen = Enumerable.Range(0, n).Where(j => NeighborhoodRule.AxisAllows(i, j, n, kernel, stride, dilation, causal));
            Assert.That(seen, Is.EqualTo(expected[i]), $"query {i}");
        }
    }

    [TestCaseSource(nameof(Tables))]
    public void KernelWindowRuleMatchesTable(int n, int kernel, int stride, int dilation, bool causal, int[][] expected)
    {
        for (var i = 0; i < n; i++)
        {
            WindowRule.KeyRange(i, n, kernel, stride, dilation, causal, out var first, out var count);
            var seen = Enumerable.Range(0, count).Select(k => first + (k * dilation));
            Assert.That(seen, Is.EqualTo(expected[i]), $"query {i}");
        }
    }

    private static TestCaseData Case(string name, int n, int kernel, int stride, int dilation, bool causal, string windows)
    {
        var expected = windows.Split(' ').Select(w => w.Select(c => c - '0').ToArray()).ToArray();
        Assert.That(expected, Has.Length.EqualTo(n), "table has one window per query");
        return new TestCaseData(n, kernel, stride, dilation, causal, expected)
            .SetName($"{{m}}({name}: n={n} K={kernel} s={stride} d={dilation} causal={causal})");
    }
}
