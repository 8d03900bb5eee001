using System.Numerics;

namespace Natten;

public static partial class NeighborhoodAttention
{
    /// <summary>
    /// Merges two attentions of the same queries over disjoint key sets (e.g. a neighborhood and
    /// additional tokens) into the attention over their union.
    /// </summary>
    /// <remarks>
    /// Per row: <c>o = (e^l1 o1 + e^l2 o2) / (e^l1 + e^l2)</c>, <c>l = log(e^l1 + e^l2)</c>, computed
    /// stably in double precision. A row with both LSEs −∞ merges to output 0 and LSE −∞.
    /// The destinations may be exactly the first or second input (in-place), but not overlap otherwise.
    /// </remarks>
    /// <param name="output1">First output, <c>[rows, valueDim]</c> (rows = B·N·H).</param>
    /// <param name="logSumExp1">First LSE, <c>[rows]</c>.</param>
    /// <param name="output2">Second output, <c>[rows, valueDim]</c>.</param>
    /// <param name="logSumExp2">Second LSE, <c>[rows]</c>.</param>
    /// <param name="valueDim">Length of one output row.</param>
    /// <param name="output">Destination output, <c>[rows, valueDim]</c>.</param>
    /// <param name="logSumExp">Destination LSE, <c>[rows]</c>.</param>
    /// <exception cref="ArgumentException">Lengths disagree, <paramref name="valueDim"/> is not positive, a destination is too short or overlaps an input.</exception>
    public static void MergeAttentions(
        ReadOnlySpan<float> output1, ReadOnlySpan<float> logSumExp1, ReadOnlySpan<float> output2, ReadOnlySpan<float> logSumExp2,
        int valueDim, Span<float> output, Span<float> logSumExp)
        => MergeCore(output1, logSumExp1, output2, logSumExp2, valueDim, output, logSumExp);

    /// <inheritdoc cref="MergeAttentions(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, int, Span{float}, Span{float})"/>
    public static void MergeAttentions(
        ReadOnlySpan<Half> output1, ReadOnlySpan<float> logSumExp1, ReadOnlySpan<Half> output2, ReadOnlySpan<float> logSumExp2,
        int valueDim, Span<Half> output, Span<float> logSumExp)
        => MergeCore(output1, logSumExp1, output2, logSumExp2, valueDim, output, logSumExp);

    private static void MergeCore<T>(
        ReadOnlySpan<T> output1, ReadOnlySpan<float> lse1, ReadOnlySpan<T> output2, ReadOnlySpan<float> lse2,
        int valueDim, Span<T> output, Span<float> logSumExp)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        ProblemValidator.CheckMerge(output1, lse1, output2, lse2, valueDim, output, logSumExp);
        for (var r = 0; r < lse1.Length; r++)
        {
            double l1 = lse1[r], l2 = lse2[r];
            var m = Math.Max(l1, l2);
            var row = r * valueDim;
            if (double.IsNegativeInfinity(m))
            {
                output.Slice(row, valueDim).Clear();
                logSumExp[r] = float.NegativeInfinity;
                continue;
            }

            var w1 = Math.Exp(l1 - m);
            var w2 = Math.Exp(l2 - m);
            var total = w1 + w2;
            for (var c = row; c < row + valueDim; c++)
            {
                var merged = ((w1 * double.CreateTruncating(output1[c])) + (w2 * double.CreateTruncating(output2[c]))) / total;
                output[c] = T.CreateSaturating(merged);
            }

            logSumExp[r] = (float)(m + Math.Log(total));
        }
    }
}
