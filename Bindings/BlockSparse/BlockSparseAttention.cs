using System.Numerics;
using Natten.BlockSparse;

namespace Natten;

/// <summary>
/// Block-sparse attention over flat token sequences: each query attends to the keys its
/// <see cref="BlockMask"/> allows — listed key blocks only, full ones entirely, partial ones through the
/// mask's <see cref="ElementMask"/> — with an optional additive <see cref="ScoreBias"/>. Sliding windows,
/// S2/DKernel strided heads, HaloNet, segments, documents and padding come from <see cref="BlockMasks"/>.
/// Inputs come first, destinations last; everything is validated before any work.
/// </summary>
/// <remarks>
/// <c>s = scale · q·k + bias</c> over the allowed keys, <c>o = Σ softmax(s) v</c>, <c>LSE = log Σ exp(s)</c>
/// (natural log). A query with no allowed key gets <c>o = 0</c> and <c>LSE = −∞</c> (never NaN). The
/// backend is <see cref="BlockSparseOptions.Backend"/> or the first of <see cref="BackendNames"/> that can
/// run the problem.
/// </remarks>
public static partial class BlockSparseAttention
{
    /// <summary>Block-sparse backend names in order of preference: the fused ILGPU kernels, the unfused ILGPU baseline, then the double-precision reference.</summary>
    public static IReadOnlyList<string> BackendNames => [.. BlockSparseBackends.All.Select(b => b.Name)];

    /// <summary>Forward pass: <paramref name="output"/> (and optionally <paramref name="logSumExp"/>) from Q, K, V under <paramref name="mask"/>.</summary>
    /// <param name="query">Q <c>[B, Nq, H, D]</c>.</param>
    /// <param name="key">K <c>[B, Nk, Hkv, D]</c>.</param>
    /// <param name="value">V <c>[B, Nk, Hkv, Dv]</c>.</param>
    /// <param name="mask">The pattern (its token counts must match the shape's).</param>
    /// <param name="shape">Tensor sizes.</param>
    /// <param name="options">Scale, bias, backend.</param>
    /// <param name="output">Destination <c>[B, Nq, H, Dv]</c>.</param>
    /// <param name="logSumExp">Optional destination <c>[B, Nq, H]</c>; empty for none.</param>
    /// <exception cref="ArgumentException">A shape, the mask, an option or a span does not fit; the message names it.</exception>
    /// <exception cref="NotSupportedException">No backend (or not the named one) can run the problem; the message lists why.</exception>
    public static void Forward(
        ReadOnlySpan<float> query, ReadOnlySpan<float> key, ReadOnlySpan<float> value, BlockMask mask,
        BlockSparseShape shape, BlockSparseOptions options, Span<float> output, Span<float> logSumExp = default)
        => ForwardCore(new ForwardTensors<float> { Query = query, Key = key, Value = value, Output = output, LogSumExp = logSumExp }, mask, shape, options);

    /// <inheritdoc cref="Forward(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, BlockMask, BlockSparseShape, BlockSparseOptions, Span{float}, Span{float})"/>
    public static void Forward(
        ReadOnlySpan<Half> query, ReadOnlySpan<Half> key, ReadOnlySpan<Half> value, BlockMask mask,
        BlockSparseShape shape, BlockSparseOptions options, Span<Half> output, Span<float> logSumExp = default)
        => ForwardCore(new ForwardTensors<Half> { Query = query, Key = key, Value = value, Output = output, LogSumExp = logSumExp }, mask, shape, options);

    /// <summary>
    /// Backward pass: dQ, dK, dV for the upstream gradient <paramref name="outputGrad"/>, given the forward's
    /// <paramref name="output"/> and <paramref name="logSumExp"/>.
    /// </summary>
    /// <remarks>
    /// With P = softmax(S) per query row over its allowed keys: dV = Pᵀ dO, dP = dO Vᵀ, D = rowsum(dO ∘ O),
    /// dS = P ∘ (dP − D), dQ = scale · dS K, dK = scale · dSᵀ Q; GQA gradients sum over the query heads of
    /// a group. Rows with no allowed key contribute nothing. The fused backend is deterministic.
    /// With <paramref name="biasGradient"/> (opt-in) the score bias's gradient is written too:
    /// d(bias)[i] = Σ dS over the allowed pairs that read bias value i (summed over the batch entries and
    /// heads a shared bias is broadcast over, and over all pairs at a relative-position table entry), 0 for
    /// values no allowed pair reads. Without it, the backward does no extra work.
    /// </remarks>
    /// <param name="query">Q <c>[B, Nq, H, D]</c>.</param>
    /// <param name="key">K <c>[B, Nk, Hkv, D]</c>.</param>
    /// <param name="value">V <c>[B, Nk, Hkv, Dv]</c>.</param>
    /// <param name="output">The forward output <c>[B, Nq, H, Dv]</c>.</param>
    /// <param name="logSumExp">The forward LSE <c>[B, Nq, H]</c>.</param>
    /// <param name="outputGrad">dO <c>[B, Nq, H, Dv]</c>.</param>
    /// <param name="mask">The pattern of the forward.</param>
    /// <param name="shape">Tensor sizes.</param>
    /// <param name="options">Scale, bias, backend (as in the forward).</param>
    /// <param name="queryGrad">Destination dQ.</param>
    /// <param name="keyGrad">Destination dK.</param>
    /// <param name="valueGrad">Destination dV.</param>
    /// <param name="biasGradient">
    /// Optional destination for the gradient of <see cref="BlockSparseOptions.Bias"/>: exactly
    /// <see cref="ScoreBias.Length"/> floats, laid out like the bias's values (overwritten, not accumulated);
    /// empty for none. Giving one without a bias is an error.
    /// </param>
    /// <exception cref="ArgumentException">A shape, the mask, an option or a span does not fit; the message names it.</exception>
    /// <exception cref="NotSupportedException">No backend (or not the named one) can run the problem; the message lists why.</exception>
    public static void Backward(
        ReadOnlySpan<float> query, ReadOnlySpan<float> key, ReadOnlySpan<float> value,
        ReadOnlySpan<float> output, ReadOnlySpan<float> logSumExp, ReadOnlySpan<float> outputGrad, BlockMask mask,
        BlockSparseShape shape, BlockSparseOptions options, Span<float> queryGrad, Span<float> keyGrad, Span<float> valueGrad,
        Span<float> biasGradient = default)
        => BackwardCore(
            new BackwardTensors<float>
            {
                Query = query, Key = key, Value = value, Output = output, LogSumExp = logSumExp, OutputGrad = outputGrad,
                QueryGrad = queryGrad, KeyGrad = keyGrad, ValueGrad = valueGrad, BiasGradient = biasGradient,
            },
            mask, shape, options);

    /// <inheritdoc cref="Backward(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, BlockMask, BlockSparseShape, BlockSparseOptions, Span{float}, Span{float}, Span{float}, Span{float})"/>
    public static void Backward(
        ReadOnlySpan<Half> query, ReadOnlySpan<Half> key, ReadOnlySpan<Half> value,
        ReadOnlySpan<Half> output, ReadOnlySpan<float> logSumExp, ReadOnlySpan<Half> outputGrad, BlockMask mask,
        BlockSparseShape shape, BlockSparseOptions options, Span<Half> queryGrad, Span<Half> keyGrad, Span<Half> valueGrad,
        Span<float> biasGradient = default)
        => BackwardCore(
            new BackwardTensors<Half>
            {
                Query = query, Key = key, Value = value, Output = output, LogSumExp = logSumExp, OutputGrad = outputGrad,
                QueryGrad = queryGrad, KeyGrad = keyGrad, ValueGrad = valueGrad, BiasGradient = biasGradient,
            },
            mask, shape, options);

    /// <summary>Useful forward FLOPs of a call: <c>2 · (D + Dv) · Σ_(b, h) |allowed pairs|</c> (backward: 2.5 times this).</summary>
    /// <param name="mask">The pattern.</param>
    /// <param name="shape">Tensor sizes.</param>
    /// <returns>The FLOP count.</returns>
    /// <exception cref="ArgumentException">The shape and mask do not fit.</exception>
    public static double ForwardFlops(BlockMask mask, BlockSparseShape shape)
    {
        var problem = ProblemValidator.ValidateBlockSparse(shape, mask, default, ElementType.Float32);
        double pairs = 0;
        for (var b = 0; b < shape.Batch; b++)
        {
            for (var h = 0; h < shape.Heads; h++)
            {
                pairs += mask.AllowedPairs(b, h);
            }
        }

        return 2.0 * (problem.Shape.HeadDim + problem.Shape.ValueDim) * pairs;
    }

    private static void ForwardCore<T>(in ForwardTensors<T> tensors, BlockMask mask, BlockSparseShape shape, BlockSparseOptions options)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        var problem = ProblemValidator.ValidateBlockSparse(shape, mask, options, NeighborhoodAttention.ElementTypeOf<T>());
        ProblemValidator.CheckBlockSparseForward(problem, tensors);
        var backend = BlockSparseBackends.Choose(problem, options.Backend, AttentionPass.Forward);
        backend.Forward(problem, tensors);
    }

    private static void BackwardCore<T>(in BackwardTensors<T> tensors, BlockMask mask, BlockSparseShape shape, BlockSparseOptions options)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        var problem = ProblemValidator.ValidateBlockSparse(shape, mask, options, NeighborhoodAttention.ElementTypeOf<T>(), !tensors.BiasGradient.IsEmpty);
        ProblemValidator.CheckBlockSparseBackward(problem, tensors);
        var backend = BlockSparseBackends.Choose(problem, options.Backend, AttentionPass.Backward);
        backend.Backward(problem, tensors);
    }
}
