using System.Numerics;

namespace Natten;

public static partial class NeighborhoodAttention
{
    /// <summary>
    /// Backward pass: gradients of Q, K and V for the upstream gradient <paramref name="outputGrad"/>, given
    /// the forward's <paramref name="output"/> and <paramref name="logSumExp"/>.
    /// </summary>
    /// <remarks>
    /// With P = softmax(S) per query row, dV = Pᵀ dO, dP = dO Vᵀ, D = rowsum(dO ∘ O), dS = P ∘ (dP − D),
    /// dQ = scale · dS K, dK = scale · dSᵀ Q. GQA gradients are summed over the query heads of a group.
    /// </remarks>
    /// <param name="query">Q <c>[B, X…, H, D]</c>.</param>
    /// <param name="key">K <c>[B, X…, Hkv, D]</c>.</param>
    /// <param name="value">V <c>[B, X…, Hkv, Dv]</c>.</param>
    /// <param name="output">The forward output <c>[B, X…, H, Dv]</c>.</param>
    /// <param name="logSumExp">The forward LSE <c>[B, X…, H]</c>.</param>
    /// <param name="outputGrad">dO <c>[B, X…, H, Dv]</c>.</param>
    /// <param name="shape">Tensor sizes; <see cref="AttentionShape.AdditionalTokens"/> must be 0 here.</param>
    /// <param name="options">Neighborhood and backend.</param>
    /// <param name="queryGrad">Destination dQ.</param>
    /// <param name="keyGrad">Destination dK.</param>
    /// <param name="valueGrad">Destination dV.</param>
    /// <exception cref="ArgumentException">A shape, option or span breaks a rule; the message names it (and the axis).</exception>
    /// <exception cref="NotSupportedException">No backend (or not the named one) can run the problem; the message lists why.</exception>
    public static void Backward(
        ReadOnlySpan<float> query, ReadOnlySpan<float> key, ReadOnlySpan<float> value,
        ReadOnlySpan<float> output, ReadOnlySpan<float> logSumExp, ReadOnlySpan<float> outputGrad,
        AttentionShape shape, NeighborhoodAttentionOptions options,
        Span<float> queryGrad, Span<float> keyGrad, Span<float> valueGrad)
        => BackwardCore(
            new BackwardTensors<float>
            {
                Query = query, Key = key, Value = value, Output = output, LogSumExp = logSumExp, OutputGrad = outputGrad,
                QueryGrad = queryGrad, KeyGrad = keyGrad, ValueGrad = valueGrad,
            },
            false, shape, options);

    /// <inheritdoc cref="Backward(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, AttentionShape, NeighborhoodAttentionOptions, Span{float}, Span{float}, Span{float})"/>
    public static void Backward(
        ReadOnlySpan<Half> query, ReadOnlySpan<Half> key, ReadOnlySpan<Half> value,
        ReadOnlySpan<Half> output, ReadOnlySpan<float> logSumExp, ReadOnlySpan<Half> outputGrad,
        AttentionShape shape, NeighborhoodAttentionOptions options,
        Span<Half> queryGrad, Span<Half> keyGrad, Span<Half> valueGrad)
        => BackwardCore(
            new BackwardTensors<Half>
            {
                Query = query, Key = key, Value = value, Output = output, LogSumExp = logSumExp, OutputGrad = outputGrad,
                QueryGrad = queryGrad, KeyGrad = keyGrad, ValueGrad = valueGrad,
            },
            false, shape, options);

    /// <summary>Backward pass with additional keys/values: also writes their gradients.</summary>
    /// <inheritdoc cref="Backward(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, AttentionShape, NeighborhoodAttentionOptions, Span{float}, Span{float}, Span{float})"/>
    /// <param name="query">Q <c>[B, X…, H, D]</c>.</param>
    /// <param name="key">K <c>[B, X…, Hkv, D]</c>.</param>
    /// <param name="value">V <c>[B, X…, Hkv, Dv]</c>.</param>
    /// <param name="additionalKey">Extra keys <c>[B, AdditionalTokens, Hkv, D]</c>.</param>
    /// <param name="additionalValue">Extra values <c>[B, AdditionalTokens, Hkv, Dv]</c>.</param>
    /// <param name="output">The forward output.</param>
    /// <param name="logSumExp">The forward LSE.</param>
    /// <param name="outputGrad">dO.</param>
    /// <param name="shape">Tensor sizes.</param>
    /// <param name="options">Neighborhood and backend.</param>
    /// <param name="queryGrad">Destination dQ.</param>
    /// <param name="keyGrad">Destination dK.</param>
    /// <param name="valueGrad">Destination dV.</param>
    /// <param name="additionalKeyGrad">Destination d(additional K).</param>
    /// <param name="additionalValueGrad">Destination d(additional V).</param>
    public static void Backward(
        ReadOnlySpan<float> query, ReadOnlySpan<float> key, ReadOnlySpan<float> value,
        ReadOnlySpan<float> additionalKey, ReadOnlySpan<float> additionalValue,
        ReadOnlySpan<float> output, ReadOnlySpan<float> logSumExp, ReadOnlySpan<float> outputGrad,
        AttentionShape shape, NeighborhoodAttentionOptions options,
        Span<float> queryGrad, Span<float> keyGrad, Span<float> valueGrad, Span<float> additionalKeyGrad, Span<float> additionalValueGrad)
        => BackwardCore(
            new BackwardTensors<float>
            {
                Query = query, Key = key, Value = value, AdditionalKey = additionalKey, AdditionalValue = additionalValue,
                Output = output, LogSumExp = logSumExp, OutputGrad = outputGrad,
                QueryGrad = queryGrad, KeyGrad = keyGrad, ValueGrad = valueGrad,
                AdditionalKeyGrad = additionalKeyGrad, AdditionalValueGrad = additionalValueGrad,
            },
            true, shape, options);

    private static void BackwardCore<T>(in BackwardTensors<T> tensors, bool hasAdditional, AttentionShape shape, NeighborhoodAttentionOptions options)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        var problem = ProblemValidator.Validate(shape, options, ElementTypeOf<T>());
        ProblemValidator.CheckBackward(problem, tensors, hasAdditional);
        var backend = BackendRegistry.Default.Choose(problem, options.Backend, AttentionPass.Backward);
        backend.Backward(problem, tensors);
    }
}
