using System.Numerics;

namespace Natten;

/// <summary>
/// Neighborhood attention on host memory: each query attends to the keys of its neighborhood
/// (kernel size, stride, dilation, causal per axis; docs/SEMANTICS.md), in NATTEN's heads-last layout.
/// Inputs come first, destinations last; everything is validated before any work.
/// </summary>
/// <remarks>
/// <c>s = scale · q·k</c> over the allowed keys (and any additional tokens), <c>o = Σ softmax(s) v</c>,
/// <c>LSE = log Σ exp(s)</c> (natural log). The backend is <see cref="NeighborhoodAttentionOptions.Backend"/>
/// or the fastest one that can run the problem (<see cref="AttentionBackends"/>).
/// </remarks>
public static partial class NeighborhoodAttention
{
    /// <summary>Forward pass: <paramref name="output"/> (and optionally <paramref name="logSumExp"/>) from Q, K, V.</summary>
    /// <param name="query">Q <c>[B, X…, H, D]</c>.</param>
    /// <param name="key">K <c>[B, X…, Hkv, D]</c>.</param>
    /// <param name="value">V <c>[B, X…, Hkv, Dv]</c>.</param>
    /// <param name="shape">Tensor sizes; <see cref="AttentionShape.AdditionalTokens"/> must be 0 here.</param>
    /// <param name="options">Neighborhood and backend.</param>
    /// <param name="output">Destination <c>[B, X…, H, Dv]</c>.</param>
    /// <param name="logSumExp">Optional destination <c>[B, X…, H]</c>; empty for none.</param>
    /// <exception cref="ArgumentException">A shape, option or span breaks a rule; the message names it (and the axis).</exception>
    /// <exception cref="NotSupportedException">No backend (or not the named one) can run the problem; the message lists why.</exception>
    public static void Forward(
        ReadOnlySpan<float> query, ReadOnlySpan<float> key, ReadOnlySpan<float> value,
        AttentionShape shape, NeighborhoodAttentionOptions options, Span<float> output, Span<float> logSumExp = default)
        => ForwardCore(new ForwardTensors<float> { Query = query, Key = key, Value = value, Output = output, LogSumExp = logSumExp }, false, shape, options);

    /// <inheritdoc cref="Forward(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, AttentionShape, NeighborhoodAttentionOptions, Span{float}, Span{float})"/>
    public static void Forward(
        ReadOnlySpan<Half> query, ReadOnlySpan<Half> key, ReadOnlySpan<Half> value,
        AttentionShape shape, NeighborhoodAttentionOptions options, Span<Half> output, Span<float> logSumExp = default)
        => ForwardCore(new ForwardTensors<Half> { Query = query, Key = key, Value = value, Output = output, LogSumExp = logSumExp }, false, shape, options);

    /// <summary>
    /// Forward pass where every query also attends to <see cref="AttentionShape.AdditionalTokens"/> extra
    /// keys/values, in the same softmax.
    /// </summary>
    /// <param name="query">Q <c>[B, X…, H, D]</c>.</param>
    /// <param name="key">K <c>[B, X…, Hkv, D]</c>.</param>
    /// <param name="value">V <c>[B, X…, Hkv, Dv]</c>.</param>
    /// <param name="additionalKey">Extra keys <c>[B, AdditionalTokens, Hkv, D]</c>.</param>
    /// <param name="additionalValue">Extra values <c>[B, AdditionalTokens, Hkv, Dv]</c>.</param>
    /// <param name="shape">Tensor sizes.</param>
    /// <param name="options">Neighborhood and backend.</param>
    /// <param name="output">Destination <c>[B, X…, H, Dv]</c>.</param>
    /// <param name="logSumExp">Optional destination <c>[B, X…, H]</c>; empty for none.</param>
    /// <exception cref="ArgumentException">A shape, option or span breaks a rule; the message names it (and the axis).</exception>
    /// <exception cref="NotSupportedException">No backend (or not the named one) can run the problem; the message lists why.</exception>
    public static void Forward(
        ReadOnlySpan<float> query, ReadOnlySpan<float> key, ReadOnlySpan<float> value,
        ReadOnlySpan<float> additionalKey, ReadOnlySpan<float> additionalValue,
        AttentionShape shape, NeighborhoodAttentionOptions options, Span<float> output, Span<float> logSumExp = default)
        => ForwardCore(
            new ForwardTensors<float>
            {
                Query = query, Key = key, Value = value, AdditionalKey = additionalKey, AdditionalValue = additionalValue,
                Output = output, LogSumExp = logSumExp,
            },
            true, shape, options);

    /// <inheritdoc cref="Forward(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, AttentionShape, NeighborhoodAttentionOptions, Span{float}, Span{float})"/>
    public static void Forward(
        ReadOnlySpan<Half> query, ReadOnlySpan<Half> key, ReadOnlySpan<Half> value,
        ReadOnlySpan<Half> additionalKey, ReadOnlySpan<Half> additionalValue,
        AttentionShape shape, NeighborhoodAttentionOptions options, Span<Half> output, Span<float> logSumExp = default)
        => ForwardCore(
            new ForwardTensors<Half>
            {
                Query = query, Key = key, Value = value, AdditionalKey = additionalKey, AdditionalValue = additionalValue,
                Output = output, LogSumExp = logSumExp,
            },
            true, shape, options);

    /// <summary>1D neighborhood attention (NATTEN's <c>na1d</c>): <see cref="Forward(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, AttentionShape, NeighborhoodAttentionOptions, Span{float}, Span{float})"/> for a rank-1 shape.</summary>
    /// <inheritdoc cref="Forward(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, AttentionShape, NeighborhoodAttentionOptions, Span{float}, Span{float})"/>
    public static void Forward1D(
        ReadOnlySpan<float> query, ReadOnlySpan<float> key, ReadOnlySpan<float> value,
        AttentionShape shape, NeighborhoodAttentionOptions options, Span<float> output, Span<float> logSumExp = default)
        => Forward(query, key, value, RequireRank(shape, 1), options, output, logSumExp);

    /// <summary>2D neighborhood attention (NATTEN's <c>na2d</c>): <see cref="Forward(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, AttentionShape, NeighborhoodAttentionOptions, Span{float}, Span{float})"/> for a rank-2 shape.</summary>
    /// <inheritdoc cref="Forward(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, AttentionShape, NeighborhoodAttentionOptions, Span{float}, Span{float})"/>
    public static void Forward2D(
        ReadOnlySpan<float> query, ReadOnlySpan<float> key, ReadOnlySpan<float> value,
        AttentionShape shape, NeighborhoodAttentionOptions options, Span<float> output, Span<float> logSumExp = default)
        => Forward(query, key, value, RequireRank(shape, 2), options, output, logSumExp);

    /// <summary>3D neighborhood attention (NATTEN's <c>na3d</c>): <see cref="Forward(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, AttentionShape, NeighborhoodAttentionOptions, Span{float}, Span{float})"/> for a rank-3 shape.</summary>
    /// <inheritdoc cref="Forward(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, AttentionShape, NeighborhoodAttentionOptions, Span{float}, Span{float})"/>
    public static void Forward3D(
        ReadOnlySpan<float> query, ReadOnlySpan<float> key, ReadOnlySpan<float> value,
        AttentionShape shape, NeighborhoodAttentionOptions options, Span<float> output, Span<float> logSumExp = default)
        => Forward(query, key, value, RequireRank(shape, 3), options, output, logSumExp);

    private static void ForwardCore<T>(in ForwardTensors<T> tensors, bool hasAdditional, AttentionShape shape, NeighborhoodAttentionOptions options)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        var problem = ProblemValidator.Validate(shape, options, ElementTypeOf<T>());
        ProblemValidator.CheckForward(problem, tensors, hasAdditional);
        var backend = BackendRegistry.Default.Choose(problem, options.Backend, AttentionPass.Forward);
        backend.Forward(problem, tensors);
    }

    private static AttentionShape RequireRank(AttentionShape shape, int rank)
    {
        if (shape.Rank != rank)
        {
            ThrowHelper.ThrowShape($"shape.Spatial has {shape.Rank} axes ({shape.Spatial}); this entry point is for rank {rank}.");
        }

        return shape;
    }

    internal static ElementType ElementTypeOf<T>()
        => typeof(T) == typeof(Half) ? ElementType.Float16
         : typeof(T) == typeof(float) ? ElementType.Float32
         : throw new NotSupportedException($"Element type {typeof(T).Name} is not supported.");
}
