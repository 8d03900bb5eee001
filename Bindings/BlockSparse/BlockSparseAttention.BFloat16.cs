using Natten.BlockSparse;

namespace Natten;

public static partial class BlockSparseAttention
{
    /// <summary>
    /// Forward pass with bfloat16 storage: Q, K, V and the output are bf16 bit patterns (see
    /// <see cref="BFloat16Conversions"/>); the LSE is float32. The <c>fused</c> backend loads bf16 and
    /// computes in float32; the reference widens the inputs and rounds the output.
    /// </summary>
    /// <param name="query">Q <c>[B, Nq, H, D]</c> as bf16 bits.</param>
    /// <param name="key">K <c>[B, Nk, Hkv, D]</c> as bf16 bits.</param>
    /// <param name="value">V <c>[B, Nk, Hkv, Dv]</c> as bf16 bits.</param>
    /// <param name="mask">The pattern.</param>
    /// <param name="shape">Tensor sizes.</param>
    /// <param name="options">Scale, bias, backend.</param>
    /// <param name="output">Destination <c>[B, Nq, H, Dv]</c> as bf16 bits.</param>
    /// <param name="logSumExp">Optional destination <c>[B, Nq, H]</c>; empty for none.</param>
    /// <exception cref="ArgumentException">A shape, the mask, an option or a span does not fit; the message names it.</exception>
    /// <exception cref="NotSupportedException">No backend (or not the named one) can run the problem; the message lists why.</exception>
    public static void ForwardBFloat16(
        ReadOnlySpan<ushort> query, ReadOnlySpan<ushort> key, ReadOnlySpan<ushort> value, BlockMask mask,
        BlockSparseShape shape, BlockSparseOptions options, Span<ushort> output, Span<float> logSumExp = default)
    {
        var tensors = new ForwardTensors<ushort> { Query = query, Key = key, Value = value, Output = output, LogSumExp = logSumExp };
        var problem = ProblemValidator.ValidateBlockSparse(shape, mask, options, ElementType.BFloat16);
        ProblemValidator.CheckBlockSparseForward(problem, tensors);
        var backend = BlockSparseBackends.Choose(problem, options.Backend, AttentionPass.Forward);
        if (backend is DeviceBlockSparseBackend device)
        {
            device.ForwardBFloat16(problem, tensors);
            return;
        }

        var result = new float[problem.OutputLength];
        backend.Forward(problem, new ForwardTensors<float>
        {
            Query = Widen(query), Key = Widen(key), Value = Widen(value), Output = result, LogSumExp = logSumExp,
        });
        BFloat16Conversions.FromSingle(result, output);
    }

    /// <summary>Backward pass with bfloat16 storage: all tensors but the LSE are bf16 bit patterns.</summary>
    /// <param name="query">Q as bf16 bits.</param>
    /// <param name="key">K as bf16 bits.</param>
    /// <param name="value">V as bf16 bits.</param>
    /// <param name="output">The forward output as bf16 bits.</param>
    /// <param name="logSumExp">The forward LSE (float32).</param>
    /// <param name="outputGrad">dO as bf16 bits.</param>
    /// <param name="mask">The pattern of the forward.</param>
    /// <param name="shape">Tensor sizes.</param>
    /// <param name="options">Scale, bias, backend.</param>
    /// <param name="queryGrad">Destination dQ as bf16 bits.</param>
    /// <param name="keyGrad">Destination dK as bf16 bits.</param>
    /// <param name="valueGrad">Destination dV as bf16 bits.</param>
    /// <param name="biasGradient">Optional destination for the score bias's gradient (float32, <see cref="ScoreBias.Length"/> values; see the float overload of <c>Backward</c>).</param>
    /// <exception cref="ArgumentException">A shape, the mask, an option or a span does not fit; the message names it.</exception>
    /// <exception cref="NotSupportedException">No backend (or not the named one) can run the problem; the message lists why.</exception>
    public static void BackwardBFloat16(
        ReadOnlySpan<ushort> query, ReadOnlySpan<ushort> key, ReadOnlySpan<ushort> value,
        ReadOnlySpan<ushort> output, ReadOnlySpan<float> logSumExp, ReadOnlySpan<ushort> outputGrad, BlockMask mask,
        BlockSparseShape shape, BlockSparseOptions options, Span<ushort> queryGrad, Span<ushort> keyGrad, Span<ushort> valueGrad,
        Span<float> biasGradient = default)
    {
        var tensors = new BackwardTensors<ushort>
        {
            Query = query, Key = key, Value = value, Output = output, LogSumExp = logSumExp, OutputGrad = outputGrad,
            QueryGrad = queryGrad, KeyGrad = keyGrad, ValueGrad = valueGrad, BiasGradient = biasGradient,
        };
        var problem = ProblemValidator.ValidateBlockSparse(shape, mask, options, ElementType.BFloat16, !biasGradient.IsEmpty);
        ProblemValidator.CheckBlockSparseBackward(problem, tensors);
        var backend = BlockSparseBackends.Choose(problem, options.Backend, AttentionPass.Backward);
        if (backend is DeviceBlockSparseBackend device)
        {
            device.BackwardBFloat16(problem, tensors);
            return;
        }

        var (dq, dk, dv) = (new float[problem.QueryLength], new float[problem.KeyLength], new float[problem.ValueLength]);
        backend.Backward(problem, new BackwardTensors<float>
        {
            Query = Widen(query), Key = Widen(key), Value = Widen(value), Output = Widen(output), LogSumExp = logSumExp,
            OutputGrad = Widen(outputGrad), QueryGrad = dq, KeyGrad = dk, ValueGrad = dv, BiasGradient = biasGradient,
        });
        BFloat16Conversions.FromSingle(dq, queryGrad);
        BFloat16Conversions.FromSingle(dk, keyGrad);
        BFloat16Conversions.FromSingle(dv, valueGrad);
    }

    private static float[] Widen(ReadOnlySpan<ushort> bits)
    {
        var values = new float[bits.Length];
        BFloat16Conversions.ToSingle(bits, values);
        return values;
    }
}
