using Natten.Kernels.Common;

namespace Natten;

/// <summary>
/// Useful FLOPs of a problem (docs/SEMANTICS.md): only (query, key) pairs a query may attend to count,
/// never the dense N² work. Every TFLOP/s this library reports uses these counts.
/// </summary>
public static class AttentionFlops
{
    /// <summary>Forward: <c>2 · B · H · (D + Dv) · Σ_queries |allowed keys|</c> (<c>4·B·H·N·∏K·D</c> for plain NA with D = Dv).</summary>
    /// <exception cref="ArgumentException">The shape or options are invalid.</exception>
    public static double Forward(AttentionShape shape, NeighborhoodAttentionOptions options)
    {
        var p = ProblemValidator.Validate(shape, options, ElementType.Float32);
        return 2.0 * p.Batch * p.Heads * (p.HeadDim + p.ValueDim) * AllowedPairsPerHead(p);
    }

    /// <summary>Backward: 2.5 × the forward count (the FlashAttention-2 convention).</summary>
    /// <exception cref="ArgumentException">The shape or options are invalid.</exception>
    public static double Backward(AttentionShape shape, NeighborhoodAttentionOptions options) => 2.5 * Forward(shape, options);

    /// <summary>
    /// Σ over the queries of one (batch, head) of the number of keys each sees, additional tokens included.
    /// The window is a product over axes, so the sum factorises into per-axis sums.
    /// </summary>
    internal static double AllowedPairsPerHead(AttentionProblem p)
    {
        var pairs = 1.0;
        for (var a = 0; a < p.Rank; a++)
        {
            long axisSum = 0;
            for (var i = 0; i < p.Spatial[a]; i++)
            {
                axisSum += WindowRule.KeyCount(i, p.Spatial[a], p.KernelSize[a], p.Stride[a], p.Dilation[a], p.Causal[a]);
            }

            pairs *= axisSum;
        }

        return pairs + ((double)p.Tokens * p.AdditionalTokens);
    }
}
