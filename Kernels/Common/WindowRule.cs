namespace Natten.Kernels.Common;

/// <summary>
/// The neighborhood window of one query on one axis, as a key range: the form kernels iterate.
/// Pure integer math on scalars so it compiles inside ILGPU kernels as well as on the host.
/// The Reference states the same rule as a predicate (it shares no code with this file); tests
/// check that both agree on every small configuration.
/// </summary>
internal static partial class WindowRule
{
    /// <summary>
    /// The keys query <paramref name="i"/> sees on an axis of length <paramref name="n"/>:
    /// coordinates <c>first, first + d, …</c>, <paramref name="count"/> of them.
    /// </summary>
    public static void KeyRange(int i, int n, int kernel, int stride, int dilation, bool causal, out int first, out int count)
    {
        var group = i % dilation;
        var inGroup = i / dilation;
        var groupLength = (n - group + dilation - 1) / dilation;
        int start;
        if (causal)
        {
            var leader = Min((inGroup / stride * stride) + stride - 1, groupLength - 1);
            start = Max(leader - kernel + 1, 0);
            count = inGroup - start + 1;
        }
        else
        {
            var leader = Min((inGroup / stride * stride) + (stride / 2), groupLength - 1);
            start = Min(Max(leader - (kernel / 2), 0), groupLength - kernel);
            count = kernel;
        }

        first = (start * dilation) + group;
    }

    /// <summary>Number of keys query <paramref name="i"/> sees on this axis.</summary>
    public static int KeyCount(int i, int n, int kernel, int stride, int dilation, bool causal)
    {
        KeyRange(i, n, kernel, stride, dilation, causal, out _, out var count);
        return count;
    }

    // Local min/max keep the rule free of BCL calls, so ILGPU compiles it for any backend.
    private static int Min(int a, int b) => a < b ? a : b;

    private static int Max(int a, int b) => a > b ? a : b;
}
