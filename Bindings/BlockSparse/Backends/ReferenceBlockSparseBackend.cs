using System.Numerics;
using Natten.Reference;

namespace Natten.BlockSparse;

/// <summary>
/// The double-precision Reference's dense-mask oracle as a backend: every (query, key) pair is tested
/// against <see cref="BlockMask.Allows"/>; inputs are converted to double and results rounded back.
/// Exact but O(Nq·Nk) per head; the last resort and the tests' oracle path. Computes the score bias's
/// gradient too when asked (<see cref="ReferenceAttention.DenseMaskedBiasGradient"/>).
/// </summary>
internal sealed class ReferenceBlockSparseBackend : IBlockSparseBackend
{
    /// <summary>Problems above this many (query, key) pair tests would take minutes.</summary>
    internal const double MaxPairs = 2e9;

    public string Name => "reference";

    public string Description => "double-precision CPU oracle, every (query, key) pair against the mask";

    public bool CanRun(BlockSparseProblem problem, AttentionPass pass, out string reason)
    {
        var s = problem.Shape;
        var pairs = (double)s.Batch * s.Heads * s.QueryTokens * s.KeyTokens;
        if (pairs > MaxPairs)
        {
            reason = $"it tests every (query, key) pair and this problem has {pairs:0.##e+0} (limit {MaxPairs:0.##e+0})";
            return false;
        }

        reason = string.Empty;
        return true;
    }

    public void Forward<T>(BlockSparseProblem problem, in ForwardTensors<T> tensors)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        var (allows, bias) = Predicates(problem);
        var result = ReferenceAttention.DenseMasked(
            Dims(problem), ToDouble(tensors.Query), ToDouble(tensors.Key), ToDouble(tensors.Value), allows, bias);
        Store(result.Output, tensors.Output);
        if (!tensors.LogSumExp.IsEmpty)
        {
            Store(result.LogSumExp, tensors.LogSumExp);
        }
    }

    public void Backward<T>(BlockSparseProblem problem, in BackwardTensors<T> tensors)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        // The Reference recomputes the probabilities from Q and K; Output and LogSumExp are not needed.
        var (allows, bias) = Predicates(problem);
        var grads = ReferenceAttention.DenseMaskedBackward(
            Dims(problem), ToDouble(tensors.Query), ToDouble(tensors.Key), ToDouble(tensors.Value), ToDouble(tensors.OutputGrad), allows, bias);
        Store(grads.Query, tensors.QueryGrad);
        Store(grads.Key, tensors.KeyGrad);
        Store(grads.Value, tensors.ValueGrad);
        if (problem.BiasGradient)
        {
            var scoreBias = problem.Bias!;
            var biasGrad = ReferenceAttention.DenseMaskedBiasGradient(
                Dims(problem), ToDouble(tensors.Query), ToDouble(tensors.Key), ToDouble(tensors.Value), ToDouble(tensors.OutputGrad),
                allows, bias!, scoreBias.IndexOf, scoreBias.Length);
            Store(biasGrad, tensors.BiasGradient);
        }
    }

    internal static MaskedAttentionDims Dims(BlockSparseProblem p) => new(
        p.Shape.Batch, p.Shape.QueryTokens, p.Shape.KeyTokens, p.Shape.Heads, p.Shape.KvHeads, p.Shape.HeadDim, p.Shape.ValueDim, p.Scale);

    private static (Func<int, int, int, int, bool> Allows, Func<int, int, int, int, double>? Bias) Predicates(BlockSparseProblem problem)
    {
        var mask = problem.Mask;
        var bias = problem.Bias;
        return (mask.Allows, bias is null ? null : (b, h, q, k) => bias.Bias(b, h, q, k));
    }

    private static double[] ToDouble<T>(ReadOnlySpan<T> source)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        var result = new double[source.Length];
        for (var i = 0; i < source.Length; i++)
        {
            result[i] = double.CreateTruncating(source[i]);
        }

        return result;
    }

    private static void Store<T>(double[] source, Span<T> destination)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        for (var i = 0; i < source.Length; i++)
        {
            destination[i] = T.CreateSaturating(source[i]);
        }
    }
}
