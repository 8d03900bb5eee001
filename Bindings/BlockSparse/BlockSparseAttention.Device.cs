using ILGPU;
using ILGPU.Runtime;
using Natten.BlockSparse;

namespace Natten;

public static partial class BlockSparseAttention
{
    /// <summary>
    /// Forward pass on tensors in an accelerator's memory (no host copies), queued on
    /// <paramref name="stream"/> (default: the device's default stream). The mask's block lists (and
    /// element-mask data) are copied to the device on first use and kept there.
    /// </summary>
    /// <typeparam name="T"><see cref="float"/> or <see cref="System.Half"/>.</typeparam>
    /// <param name="query">Q <c>[B, Nq, H, D]</c>.</param>
    /// <param name="key">K <c>[B, Nk, Hkv, D]</c>.</param>
    /// <param name="value">V <c>[B, Nk, Hkv, Dv]</c>.</param>
    /// <param name="mask">The pattern.</param>
    /// <param name="shape">Tensor sizes.</param>
    /// <param name="options">Scale, bias, backend (one that runs on device tensors).</param>
    /// <param name="output">Destination <c>[B, Nq, H, Dv]</c>.</param>
    /// <param name="logSumExp">Optional destination <c>[B, Nq, H]</c>.</param>
    /// <param name="stream">Stream of the tensors' device to queue the work on.</param>
    /// <exception cref="ArgumentException">A shape, the mask, an option or a tensor does not fit (wrong length, another device, a destination that is also an input).</exception>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not float or Half, or no device backend (or not the named one) can run the problem.</exception>
    public static void Forward<T>(
        DeviceTensor<T> query, DeviceTensor<T> key, DeviceTensor<T> value, BlockMask mask,
        BlockSparseShape shape, BlockSparseOptions options, DeviceTensor<T> output,
        DeviceTensor<float>? logSumExp = null, AcceleratorStream? stream = null)
        where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(query);
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        ArgumentNullException.ThrowIfNull(output);
        var problem = ProblemValidator.ValidateBlockSparse(shape, mask, options, ElementTypeOf<T>());
        ProblemValidator.CheckBlockSparseForwardLengths(
            problem, new ForwardLengths(query.Length, key.Length, value.Length, 0, 0, output.Length, logSumExp?.Length));
        var device = DeviceTensorChecks.SameDevice((query, "query"), (key, "key"), (value, "value"), (output, "output"), (logSumExp, "logSumExp"));
        DeviceTensorChecks.DistinctDestinations(
            [(query, "query"), (key, "key"), (value, "value")], [(output, "output"), (logSumExp, "logSumExp")]);
        var backend = (IDeviceBlockSparseBackend)BlockSparseBackends.Choose(problem, options.Backend, AttentionPass.Forward, device.Compute);
        var s = stream ?? device.Accelerator.DefaultStream;
        var lse = logSumExp?.View ?? ArrayView<float>.Empty;
        if (typeof(T) == typeof(float))
        {
            backend.Forward(device.Compute, s, problem, new DeviceForward<float>(
                View<T, float>(query), View<T, float>(key), View<T, float>(value), default, default, View<T, float>(output), lse));
        }
        else
        {
            backend.Forward(device.Compute, s, problem, new DeviceForward<ILGPU.Half>(
                View<T, ILGPU.Half>(query), View<T, ILGPU.Half>(key), View<T, ILGPU.Half>(value), default, default, View<T, ILGPU.Half>(output), lse));
        }
    }

    /// <summary>Backward pass on device tensors: dQ, dK, dV, and optionally the score bias's gradient.</summary>
    /// <remarks>
    /// Same math as the span overload; waits for the stream before returning (its workspaces are freed): the
    /// row term, and with <paramref name="biasGradient"/> for a dense bias broadcast over batch/heads the dS of
    /// the listed blocks (B · H · listed blocks per (b, h) · Bq · Bk floats), for a relative-position bias one
    /// partial sum per query row and table entry of its head (B · Nq · H · Π(2K − 1) floats).
    /// </remarks>
    /// <typeparam name="T"><see cref="float"/> or <see cref="System.Half"/>.</typeparam>
    /// <param name="query">Q.</param>
    /// <param name="key">K.</param>
    /// <param name="value">V.</param>
    /// <param name="output">The forward output.</param>
    /// <param name="logSumExp">The forward LSE.</param>
    /// <param name="outputGrad">dO.</param>
    /// <param name="mask">The pattern of the forward.</param>
    /// <param name="shape">Tensor sizes.</param>
    /// <param name="options">Scale, bias, backend.</param>
    /// <param name="queryGrad">Destination dQ.</param>
    /// <param name="keyGrad">Destination dK.</param>
    /// <param name="valueGrad">Destination dV.</param>
    /// <param name="stream">Stream of the tensors' device to queue the work on.</param>
    /// <param name="biasGradient">
    /// Optional destination for the gradient of <see cref="BlockSparseOptions.Bias"/> (float32, exactly
    /// <see cref="ScoreBias.Length"/> values, laid out like the bias; overwritten); null for none.
    /// </param>
    /// <exception cref="ArgumentException">A shape, the mask, an option or a tensor does not fit.</exception>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not float or Half, or no device backend can run the problem.</exception>
    public static void Backward<T>(
        DeviceTensor<T> query, DeviceTensor<T> key, DeviceTensor<T> value,
        DeviceTensor<T> output, DeviceTensor<float> logSumExp, DeviceTensor<T> outputGrad, BlockMask mask,
        BlockSparseShape shape, BlockSparseOptions options,
        DeviceTensor<T> queryGrad, DeviceTensor<T> keyGrad, DeviceTensor<T> valueGrad, AcceleratorStream? stream = null,
        DeviceTensor<float>? biasGradient = null)
        where T : unmanaged
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
        var problem = ProblemValidator.ValidateBlockSparse(shape, mask, options, ElementTypeOf<T>(), biasGradient is not null);
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
        var dBias = biasGradient?.View ?? ArrayView<float>.Empty;
        if (typeof(T) == typeof(float))
        {
            backend.Backward(device.Compute, s, problem, new DeviceBackward<float>(
                View<T, float>(query), View<T, float>(key), View<T, float>(value), default, default, View<T, float>(output), logSumExp.View,
                View<T, float>(outputGrad), View<T, float>(queryGrad), View<T, float>(keyGrad), View<T, float>(valueGrad), default, default), dBias);
        }
        else
        {
            backend.Backward(device.Compute, s, problem, new DeviceBackward<ILGPU.Half>(
                View<T, ILGPU.Half>(query), View<T, ILGPU.Half>(key), View<T, ILGPU.Half>(value), default, default, View<T, ILGPU.Half>(output),
                logSumExp.View, View<T, ILGPU.Half>(outputGrad), View<T, ILGPU.Half>(queryGrad), View<T, ILGPU.Half>(keyGrad),
                View<T, ILGPU.Half>(valueGrad), default, default), dBias);
        }
    }

    /// <summary>The tensor's data as the kernels' element type (System.Half and ILGPU.Half share their bits).</summary>
    private static ArrayView<TD> View<T, TD>(DeviceTensor<T> tensor)
        where T : unmanaged
        where TD : unmanaged
        => tensor.View.Cast<TD>();

    private static ElementType ElementTypeOf<T>()
        where T : unmanaged
        => typeof(T) == typeof(System.Half) ? ElementType.Float16
         : typeof(T) == typeof(float) ? ElementType.Float32
         : throw new NotSupportedException($"Block-sparse attention supports float and System.Half tensors, not {typeof(T).Name}.");
}
