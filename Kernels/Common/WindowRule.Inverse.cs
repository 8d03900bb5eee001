namespace Natten.Kernels.Common;

internal static partial class WindowRule
{
    /// <summary>
    /// The queries that see key <paramref name="j"/> on an axis (the inverse neighborhood, needed for
    /// dK/dV): coordinates <c>first, first + d, …</c>, <paramref name="count"/> of them (possibly 0).
    /// </summary>
    /// <remarks>
    /// Window starts never decrease along a dilation group and windows end at or after their query,
    /// so the queries seeing a key form one contiguous run of the key's group. Any such query lies
    /// within K + s group positions of the key; the scan below covers 2K + 2s to be safe, and the
    /// tests check this against the brute-force predicate on every small configuration.
    /// </remarks>
    public static void QueryRange(int j, int n, int kernel, int stride, int dilation, bool causal, out int first, out int count)
    {
        var group = j % dilation;
        var inGroup = j / dilation;
        var groupLength = (n - group + dilation - 1) / dilation;
        var reach = (2 * kernel) + (2 * stride);
        var lo = Max(inGroup - reach, 0);
        var hi = Min(inGroup + reach, groupLength - 1);
        var firstInGroup = -1;
        var lastInGroup = -2;
        for (var q = lo; q <= hi; q++)
        {
            KeyRange((q * dilation) + group, n, kernel, stride, dilation, causal, out var keyFirst, out var keyCount);
            var start = keyFirst / dilation;
            if (start <= inGroup && inGroup < start + keyCount)
            {
                if (firstInGroup < 0)
                {
                    firstInGroup = q;
                }

                lastInGroup = q;
            }
        }

        first = firstInGroup < 0 ? group : (firstInGroup * dilation) + group;
        count = lastInGroup - firstInGroup + 1;
        if (firstInGroup < 0)
        {
            count = 0;
        }
    }
}
