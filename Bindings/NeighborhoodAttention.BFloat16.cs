namespace Natten;

public static partial class NeighborhoodAttention
{
    /// <summary>
    /// Forward pass with bfloat16 storage: Q, K, V and the output are bf16 bit patterns (see
    /// <see cref="BFloat16Conversions"/>); the LSE is float32. The <c>fused</c> backend runs bf16 on
    /// tensor cores when the head dims allow; other backends compute in float32 and round the output.
    /// </summary>
    /// <param name="query">Q <c>[B, X…, H, D]</c> as bf16 bits.</param>
    /// <param name="key">K <c>[B, X…, Hkv, D]</c> as bf16 bits.</param>
    /// <param name="value">V <c>[B, X…, Hkv, Dv]</c> as bf16 bits.</param>
    /// <param name="shape">Tensor sizes; <see cref="AttentionShape.AdditionalTokens"/> must be 0 here.</param>
    /// <param name="options">Neighborhood and backend.</param>
    /// <param name="output">Destination <c>[B, X…, H, Dv]</c> as bf16 bits.</param>
    /// <param name="logSumExp">Optional destination <c>[B, X…, H]</c>; empty for none.</param>
    /// <exception cref="ArgumentException">A shape, option or span breaks a rule; the message names it (and the axis).</exception>
    /// <exception cref="NotSupportedException">No backend (or not the named one) can run the problem; the message lists why.</exception>
    public static void ForwardBFloat16(
        ReadOnlySpan<ushort> query, ReadOnlySpan<ushort> key, ReadOnlySpan<ushort> value,
        AttentionShape shape, NeighborhoodAttentionOptions options, Span<ushort> output, Span<float> logSumExp = default)
        => ForwardBFloat16Core(new ForwardTensors<ushort> { Query = query, Key = key, Value = value, Output = output, LogSumExp = logSumExp }, false, shape, options);

    /// <summary>Forward pass with bfloat16 storage and additional key/value tokens in the same softmax.</summary>
    /// <param name="query">Q <c>[B, X…, H, D]</c> as bf16 bits.</param>
    /// <param name="key">K <c>[B, X…, Hkv, D]</c> as bf16 bits.</param>
    /// <param name="value">V <c>[B, X…, Hkv, Dv]</c> as bf16 bits.</param>
    /// <param name="additionalKey">Extra keys <c>[B, AdditionalTokens, Hkv, D]</c> as bf16 bits.</param>
    /// <param name="additionalValue">Extra values <c>[B, AdditionalTokens, Hkv, Dv]</c> as bf16 bits.</param>
    /// <param name="shape">Tensor sizes.</param>
    /// <param name="options">Neighborhood and backend.</param>
    /// <param name="output">Destination <c>[B, X…, H, Dv]</c> as bf16 bits.</param>
    /// <param name="logSumExp">Optional destination <c>[B, X…, H]</c>; empty for none.</param>
    /// <exception cref="ArgumentException">A shape, option or span breaks a rule; the message names it (and the axis).</exception>
    /// <exception cref="NotSupportedException">No backend (or not the named one) can run the problem; the message lists why.</exception>
    public static void ForwardBFloat16(
        ReadOnlySpan<ushort> query, ReadOnlySpan<ushort> key, ReadOnlySpan<ushort> value,
        ReadOnlySpan<ushort> additionalKey, ReadOnlySpan<ushort> additionalValue,
        AttentionShape shape, NeighborhoodAttentionOptions options, Span<ushort> output, Span<float> logSumExp = default)
        => ForwardBFloat16Core(
            new ForwardTensors<ushort>
            {
                Query = query, Key = key, Value = value, AdditionalKey = additionalKey, AdditionalValue = additionalValue,
                Output = output, LogSumExp = logSumExp,
            },
            true, shape, options);

    /// <summary>
    /// Backward pass with bfloat16 storage (bits in <see cref="ushort"/>); LSE float32. The <c>fused</c> backend runs it on
    /// tensor cores when D and Dv are multiples of 16; other backends compute in float32 and round the gradients.
    /// </summary>
    /// <param name="query">Q as bf16 bits.</param>
    /// <param name="key">K as bf16 bits.</param>
    /// <param name="value">V as bf16 bits.</param>
    /// <param name="output">The forward output as bf16 bits.</param>
    /// <param name="logSumExp">The forward LSE.</param>
    /// <param name="outputGrad">dO as bf16 bits.</param>
    /// <param name="shape">Tensor sizes; <see cref="AttentionShape.AdditionalTokens"/> must be 0 here.</param>
    /// <param name="options">Neighborhood and backend.</param>
    /// <param name="queryGrad">Destination dQ (bf16 bits).</param>
    /// <param name="keyGrad">Destination dK (bf16 bits).</param>
    /// <param name="valueGrad">Destination dV (bf16 bits).</param>
    /// <exception cref="ArgumentException">A shape, option or span breaks a rule; the message names it (and the axis).</exception>
    /// <exception cref="NotSupportedException">No backend (or not the named one) can run the problem; the message lists why.</exception>
    public static void BackwardBFloat16(
        ReadOnlySpan<ushort> query, ReadOnlySpan<ushort> key, ReadOnlySpan<ushort> value,
        ReadOnlySpan<ushort> output, ReadOnlySpan<float> logSumExp, ReadOnlySpan<ushort> outputGrad,
        AttentionShape shape, NeighborhoodAttentionOptions options,
        Span<ushort> queryGrad, Span<ushort> keyGrad, Span<ushort> valueGrad)
    {
        var tensors = new BackwardTensors<ushort>
        {
            Query = query, Key = key, Value = value, Output = output, LogSumExp = logSumExp, OutputGrad = outputGrad,
            QueryGrad = queryGrad, KeyGrad = keyGrad, ValueGrad = valueGrad,
        };
        var problem = ProblemValidator.Validate(shape, options, ElementType.BFloat16);
        ProblemValidator.CheckBackward(problem, tensors, false);
        var backend = BackendRegistry.Default.Choose(problem, options.Backend, AttentionPass.Backward);
        if (backend is IBFloat16Backend native)
        {
            native.BackwardBFloat16(problem, tensors);
            return;
        }

        BackwardBFloat16ViaFloat32(backend, problem, tensors);
    }

    /// <summary>Widens bf16 inputs to float32 (exact), runs the backend's float32 backward, rounds the gradients to bf16.</summary>
    internal static void BackwardBFloat16ViaFloat32(IAttentionBackend backend, AttentionProblem problem, in BackwardTensors<ushort> t)
    {
        var (dq, dk, dv) = (new float[problem.QueryLength], new float[problem.KeyLength], new float[problem.ValueLength]);
        var (dak, dav) = (new float[problem.AdditionalKeyLength], new float[problem.AdditionalValueLength]);
        backend.Backward(problem, new BackwardTensors<float>
        {
            Query = Widen(t.Query), Key = Widen(t.Key), Value = Widen(t.Value), AdditionalKey = Widen(t.AdditionalKey),
            AdditionalValue = Widen(t.AdditionalValue), Output = Widen(t.Output), LogSumExp = t.LogSumExp, OutputGrad = Widen(t.OutputGrad),
            QueryGrad = dq, KeyGrad = dk, ValueGrad = dv, AdditionalKeyGrad = dak, AdditionalValueGrad = dav,
        });
        BFloat16Conversions.FromSingle(dq, t.QueryGrad);
        BFloat16Conversions.FromSingle(dk, t.KeyGrad);
        BFloat16Conversions.FromSingle(dv, t.ValueGrad);
        BFloat16Conversions.FromSingle(dak, t.AdditionalKeyGrad);
        BFloat16Conversions.FromSingle(dav, t.AdditionalValueGrad);
    }

    private static float[] Widen(ReadOnlySpan<ushort> bits)
    {
        var values = new float[bits.Length];
        BFloat16Conversions.ToSingle(bits, values);
        return values;
    }

    private static void ForwardBFloat16Core(in ForwardTensors<ushort> tensors, bool hasAdditional, AttentionShape shape, NeighborhoodAttentionOptions options)
    {
        var problem = ProblemValidator.Validate(shape, options, ElementType.BFloat16);
        ProblemValidator.CheckForward(problem, tensors, hasAdditional);
        var backend = BackendRegistry.Default.Choose(problem, options.Backend, AttentionPass.Forward);
        if (backend is IBFloat16Backend native)
        {
            native.ForwardBFloat16(problem, tensors);
            return;
        }

        ForwardBFloat16ViaFloat32(backend, problem, tensors);
    }

    /// <summary>Widens bf16 inputs to float32 (exact), runs the backend's float32 path, rounds the output to bf16.</summary>
    internal static void ForwardBFloat16ViaFloat32(IAttentionBackend backend, AttentionProblem problem, in ForwardTensors<ushort> t)
    {
        var output = new float[problem.OutputLength];
        backend.Forward(problem, new ForwardTensors<float>
        {
            Query = Widen(t.Query), Key = Widen(t.Key), Value = Widen(t.Value),
            AdditionalKey = Widen(t.AdditionalKey), AdditionalValue = Widen(t.AdditionalValue),
            Output = output, LogSumExp = t.LogSumExp,
        });
        BFloat16Conversions.FromSingle(output, t.Output);
    }
}
