using Natten.Kernels.Common;
using Natten.Kernels.Cpu;

namespace Natten.Tests.Cpu;

/// <summary>
/// The CPU kernels' per-axis tables against <see cref="WindowRule"/>: the key ranges are
/// <see cref="WindowRule.KeyRange"/>'s, and the inverse ranges (computed by a sweep that relies on
/// windows sliding monotonically) equal <see cref="WindowRule.QueryRange"/> on every small configuration.
/// </summary>
public sealed class CpuWindowTableTests
{
    [Test]
    public void TablesMatchWindowRuleOnEverySmallConfiguration()
    {
        var checkedConfigurations = 0;
        for (var n = 2; n <= 14; n++)
        {
            for (var dilation = 1; dilation <= n / 2 + 1; dilation++)
            {
                for (var kernel = 2; kernel * dilation <= n; kernel++)
                {
                    for (var stride = 1; stride <= kernel; stride++)
                    {
                        foreach (var causal in new[] { false, true })
                        {
                            Check(n, kernel, stride, dilation, causal);
                            checkedConfigurations++;
                        }
                    }
                }
            }
        }

        Assert.That(checkedConfigurations, Is.GreaterThan(500));
    }

    private static void Check(int n, int kernel, int stride, int dilation, bool causal)
    {
        var axis = AxisWindows.Create(n, kernel, stride, dilation, causal);
        for (var i = 0; i < n; i++)
        {
            var group = axis.Groups[i % dilation];
            var at = i / dilation;
            var what = $"n={n} K={kernel} s={stride} d={dilation} causal={causal} i={i}";
            WindowRule.KeyRange(i, n, kernel, stride, dilation, causal, out var first, out var count);
            Assert.That((group.KeyStart[at] * dilation) + (i % dilation), Is.EqualTo(first), what);
            Assert.That(group.KeyEnd[at] - group.KeyStart[at], Is.EqualTo(count), what);
            WindowRule.QueryRange(i, n, kernel, stride, dilation, causal, out var queryFirst, out var queryCount);
            Assert.That(Math.Max(0, group.QueryEnd[at] - group.QueryStart[at]), Is.EqualTo(queryCount), what);
            if (queryCount > 0)
            {
                Assert.That((group.QueryStart[at] * dilation) + (i % dilation), Is.EqualTo(queryFirst), what);
            }
        }
    }
}
