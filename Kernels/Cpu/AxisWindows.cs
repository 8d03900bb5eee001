using Natten.Kernels.Common;

namespace Natten.Kernels.Cpu;

/// <summary>
/// One axis's neighborhoods as tables, per dilation group and in group coordinates: for every query
/// its key range (<see cref="WindowRule.KeyRange"/>) and for every key its query range (the inverse
/// neighborhood that dK and dV need). Starts and ends never decrease along a group (the windows slide),
/// which the tiling relies on: a box of rows sees the range from its first row's start to its last
/// row's end.
/// </summary>
internal sealed class AxisWindows
{
    private AxisWindows(int length, int dilation, GroupWindows[] groups)
    {
        Length = length;
        Dilation = dilation;
        Groups = groups;
    }

    /// <summary>The axis length n.</summary>
    public int Length { get; }

    /// <summary>The dilation d: the number of groups.</summary>
    public int Dilation { get; }

    /// <summary>Group g holds the coordinates g, g + d, g + 2d, ….</summary>
    public GroupWindows[] Groups { get; }

    /// <summary>The tables of one axis (the key range of every coordinate comes from <see cref="WindowRule"/>).</summary>
    public static AxisWindows Create(int length, int kernel, int stride, int dilation, bool causal)
    {
        var groups = new GroupWindows[dilation];
        for (var g = 0; g < dilation; g++)
        {
            var groupLength = (length - g + dilation - 1) / dilation;
            var keyStart = new int[groupLength];
            var keyEnd = new int[groupLength];
            for (var i = 0; i < groupLength; i++)
            {
                WindowRule.KeyRange((i * dilation) + g, length, kernel, stride, dilation, causal, out var first, out var count);
                keyStart[i] = first / dilation;
                keyEnd[i] = keyStart[i] + count;
            }

            // The queries that see key j are those whose window ends after j and starts at or before it:
            // with non-decreasing starts and ends that is one run [first end > j, last start <= j].
            var queryStart = new int[groupLength];
            var queryEnd = new int[groupLength];
            var ends = 0;
            var starts = 0;
            for (var j = 0; j < groupLength; j++)
            {
                while (ends < groupLength && keyEnd[ends] <= j)
                {
                    ends++;
                }

                while (starts < groupLength && keyStart[starts] <= j)
                {
                    starts++;
                }

                queryStart[j] = ends;
                queryEnd[j] = Math.Max(starts, ends);
            }

            groups[g] = new GroupWindows(groupLength, keyStart, keyEnd, queryStart, queryEnd);
        }

        return new AxisWindows(length, dilation, groups);
    }
}

/// <summary>The tables of one dilation group, all in group coordinates (coordinate = index · d + group).</summary>
internal sealed class GroupWindows(int length, int[] keyStart, int[] keyEnd, int[] queryStart, int[] queryEnd)
{
    /// <summary>Positions in the group.</summary>
    public int Length { get; } = length;

    /// <summary>First key seen by each query.</summary>
    public int[] KeyStart { get; } = keyStart;

    /// <summary>One past the last key seen by each query.</summary>
    public int[] KeyEnd { get; } = keyEnd;

    /// <summary>First query that sees each key.</summary>
    public int[] QueryStart { get; } = queryStart;

    /// <summary>One past the last query that sees each key (equal to the start when none does).</summary>
    public int[] QueryEnd { get; } = queryEnd;
}
