using ILGPU.Runtime;

namespace Natten;

public static partial class NeighborhoodAttention
{
    /// <summary>
    /// Forward pass on device tensors with bfloat16 storage: Q, K, V and the output hold bf16 bit patterns
    /// (<see cref="BFloat16Conversions"/>), the LSE is float32. The <c>fused</c> backend runs on tensor cores
    /// when the head dims allow, otherwise its float32-math kernel reads and writes bf16; <c>naive</c> reads
    /// and writes bf16 with float32 math. Queued on <paramref name="stream"/>; no host copies.
    /// </summary>
    /// <param name="query">Q <c>[B, X…, H, D]</c> as bf16 bits.</param>
    /// <param name="key">K <c>[B, X…, Hkv, D]</c> as bf16 bits.</param>
    /// <param name="value">V <c>[B, X…, Hkv, Dv]</c> as bf16 bits.</param>
    /// <param name="shape">Tensor sizes; <see cref="AttentionShape.AdditionalTokens"/> must be 0 here.</param>
    /// <param name="options">Neighborhood and backend (a backend that runs on device tensors).</param>
    /// <param name="output">Destination <c>[B, X…, H, Dv]</c> as bf16 bits.</param>
    /// <param name="logSumExp">Optional destination <c>[B, X…, H]</c>.</param>
    /// <param name="stream">Stream of the tensors' device to queue the work on.</param>
    /// <exception cref="ArgumentException">A shape, option or tensor breaks a rule.</exception>
    /// <exception cref="NotSupportedException">No device backend (or not the named one) can run the problem.</exception>
    public static void ForwardBFloat16(
        DeviceTensor<ushort> query, DeviceTensor<ushort> key, DeviceTensor<ushort> value,
        AttentionShape shape, NeighborhoodAttentionOptions options, DeviceTensor<ushort> output,
        DeviceTensor<float>? logSumExp = null, AcceleratorStream? stream = null)
        => DeviceForwardCore(query, key, value, null, null, false, shape, options, output, logSumExp, stream, ElementType.BFloat16);

    /// <summary>Forward pass on bf16 device tensors with additional keys/values in the same softmax.</summary>
    /// <param name="query">Q <c>[B, X…, H, D]</c> as bf16 bits.</param>
    /// <param name="key">K <c>[B, X…, Hkv, D]</c> as bf16 bits.</param>
    /// <param name="value">V <c>[B, X…, Hkv, Dv]</c> as bf16 bits.</param>
    /// <param name="additionalKey">Extra keys <c>[B, AdditionalTokens, Hkv, D]</c> as bf16 bits.</param>
    /// <param name="additionalValue">Extra values <c>[B, AdditionalTokens, Hkv, Dv]</c> as bf16 bits.</param>
    /// <param name="shape">Tensor sizes.</param>
    /// <param name="options">Neighborhood and backend.</param>
    /// <param name="output">Destination <c>[B, X…, H, Dv]</c> as bf16 bits.</param>
    /// <param name="logSumExp">Optional destination <c>[B, X…, H]</c>.</param>
    /// <param name="stream">Stream of the tensors' device to queue the work on.</param>
    /// <exception cref="ArgumentException">A shape, option or tensor breaks a rule.</exception>
    /// <exception cref="NotSupportedException">No device backend (or not the named one) can run the problem.</exception>
    public static void ForwardBFloat16(
        DeviceTensor<ushort> query, DeviceTensor<ushort> key, DeviceTensor<ushort> value,
        DeviceTensor<ushort> additionalKey, DeviceTensor<ushort> additionalValue,
        AttentionShape shape, NeighborhoodAttentionOptions options, DeviceTensor<ushort> output,
        DeviceTensor<float>? logSumExp = null, AcceleratorStream? stream = null)
        => DeviceForwardCore(query, key, value, additionalKey, additionalValue, true, shape, options, output, logSumExp, stream, ElementType.BFloat16);

    /// <summary>
    /// Backward pass on bf16 device tensors: dQ, dK, dV (and, with additional tokens, their gradients) as bf16 bits.
    /// The <c>fused</c> backend runs on tensor cores when D and Dv are multiples of 16.
    /// </summary>
    /// <param name="query">Q as bf16 bits.</param>
    /// <param name="key">K as bf16 bits.</param>
    /// <param name="value">V as bf16 bits.</param>
    /// <param name="output">The forward output as bf16 bits.</param>
    /// <param name="logSumExp">The forward LSE (float32).</param>
    /// <param name="outputGrad">dO as bf16 bits.</param>
    /// <param name="shape">Tensor sizes.</param>
    /// <param name="options">Neighborhood and backend.</param>
    /// <param name="queryGrad">Destination dQ.</param>
    /// <param name="keyGrad">Destination dK.</param>
    /// <param name="valueGrad">Destination dV.</param>
    /// <param name="additionalKey">Extra keys, when the shape has additional tokens.</param>
    /// <param name="additionalValue">Extra values, when the shape has additional tokens.</param>
    /// <param name="additionalKeyGrad">Destination d(extra keys), when the shape has additional tokens.</param>
    /// <param name="additionalValueGrad">Destination d(extra values), when the shape has additional tokens.</param>
    /// <param name="stream">Stream of the tensors' device to queue the work on.</param>
    /// <exception cref="ArgumentException">A shape, option or tensor breaks a rule.</exception>
    /// <exception cref="NotSupportedException">No device backend can run the problem.</exception>
    public static void BackwardBFloat16(
        DeviceTensor<ushort> query, DeviceTensor<ushort> key, DeviceTensor<ushort> value,
        DeviceTensor<ushort> output, DeviceTensor<float> logSumExp, DeviceTensor<ushort> outputGrad,
        AttentionShape shape, NeighborhoodAttentionOptions options,
        DeviceTensor<ushort> queryGrad, DeviceTensor<ushort> keyGrad, DeviceTensor<ushort> valueGrad,
        DeviceTensor<ushort>? additionalKey = null, DeviceTensor<ushort>? additionalValue = null,
        DeviceTensor<ushort>? additionalKeyGrad = null, DeviceTensor<ushort>? additionalValueGrad = null,
        AcceleratorStream? stream = null)
        => DeviceBackwardCore(
            query, key, value, output, logSumExp, outputGrad, shape, options, queryGrad, keyGrad, valueGrad,
            additionalKey, additionalValue, additionalKeyGrad, additionalValueGrad, stream, ElementType.BFloat16);
}
