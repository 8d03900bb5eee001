namespace Natten.Reference;

/// <summary>
/// The neighborhood rule of docs/SEMANTICS.md on one axis, written as a predicate over a
/// (query, key) coordinate pair. Every line maps to one numbered step of that document.
/// </summary>
public static class NeighborhoodRule
{
    /// <summary>
    /// Whether a query at coordinate <paramref name="i"/> sees the key at coordinate
    /// <paramref name="j"/> on an axis of length <paramref name="n"/>.
    /// </summary>
    /// <param name="i">Query coordinate on this axis.</param>
    /// <param name="j">Key coordinate on this axis.</param>
    /// <param name="n">Axis length.</param>
    /// <param name="kernel">Kernel size K (at least 2, K·d at most n).</param>
    /// <param name="stride">Stride s (1 to K).</param>
    /// <param name="dilation">Dilation d (at least 1).</param>
    /// <param name="causal">Whether this axis is causal.</param>
    public static bool AxisAllows(int i, int j, int n, int kernel, int stride, int dilation, bool causal)
    {
        // Step 1: dilation groups. Only keys of the query's group are eligible; then work in group coordinates.
        var g = i % dilation;
        if (j % dilation != g)
        {
            return false;
        }

        var iq = i / dilation;
        var jk = j / dilation;
        var groupLength = (n - g + dilation - 1) / dilation;

        // Step 2: left extent (an even K has one more key on the left).
        var left = kernel / 2;

        if (!causal)
        {
            // Step 3: the stride group's leader (its middle), then a K-wide window shifted inward at borders.
            var leader = Math.Min((iq / stride * stride) + (stride / 2), groupLength - 1);
            var start = Math.Clamp(leader - left, 0, groupLength - kernel);
            return start <= jk && jk < start + kernel;
        }
        else
        {
            // Step 4: the leader is the stride group's last member; the window ends at the query and is truncated at 0.
            var leader = Math.Min((iq / stride * stride) + stride - 1, groupLength - 1);
            var start = Math.Max(leader - (kernel - 1), 0);
            return start <= jk && jk <= iq;
        }
    }
}
