using ILGPU;
using ILGPU.Runtime;
using Natten.BlockSparse;

namespace Natten;

public static partial class BlockSparseAttention
{
    /// <summary>
    /// Forward pass with bfloat16 storage on tensors in an accelerator's memory: Q, K, V and the output hold
    /// bf16 bit patterns (<see cref="ushort"/>, see <see cref="BFloat16Conversions"/>); the LSE is float32. The
    /// <c>fused</c> kernels load bf16 and compute in float32, as for the span overload
    /// <see cref="ForwardBFloat16(ReadOnlySpan{ushort}, ReadOnlySpan{ushort}, ReadOnlySpan{ushort}, BlockMask, BlockSparseShape, BlockSparseOptions, Span{ushort}, Span{float})"/>,
    /// with no host copies; queued on <paramref name="stream"/> (default: the device's default stream).
    /// </summary>
    /// <param name="query">Q <c>[B, Nq, H, D]</c> as bf16 bits.</param>
    /// <param name="key">K <c>[B, Nk, Hkv, D]</c> as bf16 bits.</param>
    /// <param name="value">V <c>[B, Nk, Hkv, Dv]</c> as bf16 bits.</param>
    /// <param name="mask">The pattern (built on the host or on this device, e.g. <see cref="BlockMask.CreateOnDevice"/>).</param>
    /// <param name="shape">Tensor sizes.</param>
    /// <param name="options">Scale, bias, backend (one that runs on device tensors).</param>
    /// <param name="output">Destination <c>[B, Nq, H, Dv]</c> as bf16 bits.</param>
    /// <param name="logSumExp">Optional destination <c>[B, Nq, H]</c> (float32).</param>
    /// <param name="stream">Stream of the tensors' device to queue the work on.</param>
    /// <exception cref="ArgumentException">A shape, the mask, an option or a tensor does not fit (wrong length, another device, a destination that is also an input).</exception>
    /// <exception cref="NotSupportedException">No device backend (or not the named one) can run the problem.</exception>
    public static void ForwardBFloat16(
        DeviceTensor<ushort> query, DeviceTensor<ushort> key, DeviceTensor<ushort> value, BlockMask mask,
        BlockSparseShape shape, BlockSparseOptions options, DeviceTensor<ushort> output,
        DeviceTensor<float>? logSumExp = null, AcceleratorStream? stream = null)
    {
        ArgumentNullException.ThrowIfNull(query);
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        ArgumentNullException.ThrowIfNull(output);
        var problem = ProblemValidator.ValidateBlockSparse(shape, mask, options, ElementType.BFloat16);
        ProblemValidator.CheckBlockSparseForwardLengths(
            problem, new ForwardLengths(query.Length, key.Length, value.Length, 0, 0, output.Length, logSumExp?.Length));
        var device = DeviceTensorChecks.SameDevice((query, "query"), (key, "key"), (value, "value"), (output, "output"), (logSumExp, "logSumExp"));
        DeviceTensorChecks.DistinctDestinations(
            [(query, "query"), (key, "key"), (value, "value")], [(output, "output"), (logSumExp, "logSumExp")]);
        var backend = (IDeviceBlockSparseBackend)BlockSparseBackends.Choose(problem, options.Backend, AttentionPass.Forward, device.Compute);
        var s = stream ?? device.Accelerator.DefaultStream;
        backend.Forward(device.Compute, s, problem, new DeviceForward<ushort>(
            query.View, key.View, value.View, default, default, output.View, logSumExp?.View ?? ArrayView<float>.Empty));
    }

    /// <summary>Backward pass with bfloat16 storage on device tensors: dQ, dK, dV as bf16 bits (the LSE is float32).</summary>
    /// <remarks>Same math as the span overload; waits for the stream before returning (its row-term workspace is freed).</remarks>
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
    /// <param name="stream">Stream of the tensors' device to queue the work on.</param>
    /// <param name="biasGradient">Optional destination d(bias), laid out like the bias (<see cref="ScoreBias.Length"/> floats; see the float overload).</param>
    /// <exception cref="ArgumentException">A shape, the mask, an option or a tensor does not fit.</exception>
    /// <exception cref="NotSupportedException">No device backend can run the problem.</exception>
    public static void BackwardBFloat16(
        DeviceTensor<ushort> query, DeviceTensor<ushort> key, DeviceTensor<ushort> value,
        DeviceTensor<ushort> output, DeviceTensor<float> logSumExp, DeviceTensor<ushort> outputGrad, BlockMask mask,
        BlockSparseShape shape, BlockSparseOptions options,
        DeviceTensor<ushort> queryGrad, DeviceTensor<ushort> keyGrad, DeviceTensor<ushort> valueGrad, AcceleratorStream? stream = null,
        DeviceTensor<float>? biasGradient = null)
    {
        ArgumentNullException.ThrowIfNull(query);
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(logSumExp);
        ArgumentNullException.ThrowIfNull(outputGrad);
        ArgumentNullException.ThrowIfNull(queryGrad);
        ArgumentNullException.ThrowIfNull(keyGrad);
        ArgumentNullException.ThrowIfNull(valueGrad);
        var problem = ProblemValidator.ValidateBlockSparse(shape, mask, options, ElementType.BFloat16, biasGradient is not null);
        ProblemValidator.CheckBlockSparseBackwardLengths(
            problem,
            new BackwardLengths(
                query.Length, key.Length, value.Length, 0, 0, output.Length, logSumExp.Length, outputGrad.Length,
                queryGrad.Length, keyGrad.Length, valueGrad.Length, 0, 0),
            biasGradient?.Length);
        var device = DeviceTensorChecks.SameDevice(
            (query, "query"), (key, "key"), (value, "value"), (output, "output"), (logSumExp, "logSumExp"), (outputGrad, "outputGrad"),
            (queryGrad, "queryGrad"), (keyGrad, "keyGrad"), (valueGrad, "valueGrad"), (biasGradient, "biasGradient"));
        DeviceTensorChecks.DistinctDestinations(
            [(query, "query"), (key, "key"), (value, "value"), (output, "output"), (logSumExp, "logSumExp"), (outputGrad, "outputGrad")],
            [(queryGrad, "queryGrad"), (keyGrad, "keyGrad"), (valueGrad, "valueGrad"), (biasGradient, "biasGradient")]);
        var backend = (IDeviceBlockSparseBackend)BlockSparseBackends.Choose(problem, options.Backend, AttentionPass.Backward, device.Compute);
        var s = stream ?? device.Accelerator.DefaultStream;
        backend.Backward(device.Compute, s, problem, new DeviceBackward<ushort>(
            query.View, key.View, value.View, default, default, output.View, logSumExp.View,
            outputGrad.View, queryGrad.View, keyGrad.View, valueGrad.View, default, default), biasGradient?.View ?? ILGPU.ArrayView<float>.Empty);
    }
}
