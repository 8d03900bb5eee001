using System.Numerics;
using Natten.Reference;

namespace Natten.Backends;

/// <summary>
/// The double-precision Reference (Reference/) as a backend: exact but O(N²) per head, since it
/// tests every (query, key) pair. Storage is converted to double and results rounded back.
/// </summary>
internal sealed class ReferenceBackend : IAttentionBackend
{
    /// <summary>Problems above this many (query, key) pair tests would take minutes.</summary>
    internal const double MaxPairs = 2e9;

    public string Name => "reference";

    public string Description => "double-precision CPU oracle, one (query, key) pair at a time";

    public int Preference => BackendPreference.LastResort;

    public bool CanRun(AttentionProblem problem, AttentionPass pass, out string reason)
    {
        var pairs = (double)problem.Batch * problem.Heads * problem.Tokens * (problem.Tokens + problem.AdditionalTokens);
        if (pairs > MaxPairs)
        {
            reason = $"it tests every (query, key) pair and this problem has {pairs:0.##e+0} (limit {MaxPairs:0.##e+0})";
            return false;
        }

        reason = string.Empty;
        return true;
    }

    public void Forward<T>(AttentionProblem problem, in ForwardTensors<T> tensors)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        var result = ReferenceAttention.Neighborhood(
            ToReference(problem), ToDouble(tensors.Query), ToDouble(tensors.Key), ToDouble(tensors.Value),
            ToDouble(tensors.AdditionalKey), ToDouble(tensors.AdditionalValue));
        Store(result.Output, tensors.Output);
        if (!tensors.LogSumExp.IsEmpty)
        {
            Store(result.LogSumExp, tensors.LogSumExp);
        }
    }

    public void Backward<T>(AttentionProblem problem, in BackwardTensors<T> tensors)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        // The Reference recomputes the probabilities from Q and K; Output and LogSumExp are not needed.
        var grads = ReferenceAttention.NeighborhoodBackward(
            ToReference(problem), ToDouble(tensors.Query), ToDouble(tensors.Key), ToDouble(tensors.Value),
            ToDouble(tensors.OutputGrad), ToDouble(tensors.AdditionalKey), ToDouble(tensors.AdditionalValue));
        Store(grads.Query, tensors.QueryGrad);
        Store(grads.Key, tensors.KeyGrad);
        Store(grads.Value, tensors.ValueGrad);
        Store(grads.AdditionalKey, tensors.AdditionalKeyGrad);
        Store(grads.AdditionalValue, tensors.AdditionalValueGrad);
    }

    internal static NeighborhoodProblem ToReference(AttentionProblem p) => new()
    {
        Batch = p.Batch,
        Spatial = p.Spatial,
        Heads = p.Heads,
        KvHeads = p.KvHeads,
        HeadDim = p.HeadDim,
        ValueDim = p.ValueDim,
        KernelSize = p.KernelSize,
        Stride = p.Stride,
        Dilation = p.Dilation,
        Causal = p.Causal,
        Scale = p.Scale,
        AdditionalTokens = p.AdditionalTokens,
    };

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

    private static void Store(double[] source, Span<float> destination)
    {
        for (var i = 0; i < source.Length; i++)
        {
            destination[i] = (float)source[i];
        }
    }
}
