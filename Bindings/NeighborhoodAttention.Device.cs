using ILGPU;
using ILGPU.Runtime;

namespace Natten;

public static partial class NeighborhoodAttention
{
    /// <summary>
    /// Forward pass on tensors in an accelerator's memory (no host copies), queued on
    /// <paramref name="stream"/> (default: the device's default stream).
    /// </summary>
    /// <remarks>
    /// Same semantics and validation as the span overloads. The call returns once the work is done
    /// on the stream: the naive backend waits for it before freeing its ∏K weight workspace.
    /// </remarks>
    /// <typeparam name="T"><see cref="float"/> or <see cref="System.Half"/>.</typeparam>
    /// <param name="query">Q <c>[B, X…, H, D]</c>.</param>
    /// <param name="key">K <c>[B, X…, Hkv, D]</c>.</param>
    /// <param name="value">V <c>[B, X…, Hkv, Dv]</c>.</param>
    /// <param name="shape">Tensor sizes; <see cref="AttentionShape.AdditionalTokens"/> must be 0 here.</param>
    /// <param name="options">Neighborhood and backend (a backend that runs on device tensors).</param>
    /// <param name="output">Destination <c>[B, X…, H, Dv]</c>.</param>
    /// <param name="logSumExp">Optional destination <c>[B, X…, H]</c>.</param>
    /// <param name="stream">Stream of the tensors' device to queue the work on.</param>
    /// <exception cref="ArgumentException">A shape, option or tensor breaks a rule (wrong length, another device, a destination that is also an input).</exception>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not float or Half, or no device backend (or not the named one) can run the problem.</exception>
    public static void Forward<T>(
        DeviceTensor<T> query, DeviceTensor<T> key, DeviceTensor<T> value,
        AttentionShape shape, NeighborhoodAttentionOptions options, DeviceTensor<T> output,
        DeviceTensor<float>? logSumExp = null, AcceleratorStream? stream = null)
        where T : unmanaged
        => DeviceForwardCore(query, key, value, null, null, false, shape, options, output, logSumExp, stream, ElementTypeOfDevice<T>());

    /// <summary>Forward pass on device tensors with additional keys/values in the same softmax.</summary>
    /// <inheritdoc cref="Forward{T}(DeviceTensor{T}, DeviceTensor{T}, DeviceTensor{T}, AttentionShape, NeighborhoodAttentionOptions, DeviceTensor{T}, DeviceTensor{float}?, AcceleratorStream?)"/>
    /// <param name="query">Q <c>[B, X…, H, D]</c>.</param>
    /// <param name="key">K <c>[B, X…, Hkv, D]</c>.</param>
    /// <param name="value">V <c>[B, X…, Hkv, Dv]</c>.</param>
    /// <param name="additionalKey">Extra keys <c>[B, AdditionalTokens, Hkv, D]</c>.</param>
    /// <param name="additionalValue">Extra values <c>[B, AdditionalTokens, Hkv, Dv]</c>.</param>
    /// <param name="shape">Tensor sizes.</param>
    /// <param name="options">Neighborhood and backend.</param>
    /// <param name="output">Destination <c>[B, X…, H, Dv]</c>.</param>
    /// <param name="logSumExp">Optional destination <c>[B, X…, H]</c>.</param>
    /// <param name="stream">Stream of the tensors' device to queue the work on.</param>
    public static void Forward<T>(
        DeviceTensor<T> query, DeviceTensor<T> key, DeviceTensor<T> value, DeviceTensor<T> additionalKey, DeviceTensor<T> additionalValue,
        AttentionShape shape, NeighborhoodAttentionOptions options, DeviceTensor<T> output,
        DeviceTensor<float>? logSumExp = null, AcceleratorStream? stream = null)
        where T : unmanaged
        => DeviceForwardCore(query, key, value, additionalKey, additionalValue, true, shape, options, output, logSumExp, stream, ElementTypeOfDevice<T>());

    /// <summary>Backward pass on device tensors: dQ, dK, dV (and, with additional tokens, their gradients).</summary>
    /// <remarks>Same math as the span overload; the additional-token tensors are required exactly when <see cref="AttentionShape.AdditionalTokens"/> is positive.</remarks>
    /// <typeparam name="T"><see cref="float"/> or <see cref="System.Half"/>.</typeparam>
    /// <param name="query">Q.</param>
    /// <param name="key">K.</param>
    /// <param name="value">V.</param>
    /// <param name="output">The forward output.</param>
    /// <param name="logSumExp">The forward LSE.</param>
    /// <param name="outputGrad">dO.</param>
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
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not float or Half, or no device backend can run the problem.</exception>
    public static void Backward<T>(
        DeviceTensor<T> query, DeviceTensor<T> key, DeviceTensor<T> value,
        DeviceTensor<T> output, DeviceTensor<float> logSumExp, DeviceTensor<T> outputGrad,
        AttentionShape shape, NeighborhoodAttentionOptions options,
        DeviceTensor<T> queryGrad, DeviceTensor<T> keyGrad, DeviceTensor<T> valueGrad,
        DeviceTensor<T>? additionalKey = null, DeviceTensor<T>? additionalValue = null,
        DeviceTensor<T>? additionalKeyGrad = null, DeviceTensor<T>? additionalValueGrad = null,
        AcceleratorStream? stream = null)
        where T : unmanaged
        => DeviceBackwardCore(
            query, key, value, output, logSumExp, outputGrad, shape, options, queryGrad, keyGrad, valueGrad,
            additionalKey, additionalValue, additionalKeyGrad, additionalValueGrad, stream, ElementTypeOfDevice<T>());

    private static void DeviceBackwardCore<T>(
        DeviceTensor<T> query, DeviceTensor<T> key, DeviceTensor<T> value,
        DeviceTensor<T> output, DeviceTensor<float> logSumExp, DeviceTensor<T> outputGrad,
        AttentionShape shape, NeighborhoodAttentionOptions options,
        DeviceTensor<T> queryGrad, DeviceTensor<T> keyGrad, DeviceTensor<T> valueGrad,
        DeviceTensor<T>? additionalKey, DeviceTensor<T>? additionalValue,
        DeviceTensor<T>? additionalKeyGrad, DeviceTensor<T>? additionalValueGrad,
        AcceleratorStream? stream, ElementType elementType)
        where T : unmanaged
    {
        var problem = ProblemValidator.Validate(shape, options, elementType);
        var hasAdditional = additionalKey is not null || additionalValue is not null || additionalKeyGrad is not null || additionalValueGrad is not null;
        ProblemValidator.CheckBackwardLengths(
            problem,
            new BackwardLengths(
                query.Length, key.Length, value.Length, additionalKey?.Length ?? 0, additionalValue?.Length ?? 0, output.Length,
                logSumExp.Length, outputGrad.Length, queryGrad.Length, keyGrad.Length, valueGrad.Length,
                additionalKeyGrad?.Length ?? 0, additionalValueGrad?.Length ?? 0),
            hasAdditional);
        var device = DeviceTensorChecks.SameDevice(
            (query, "query"), (key, "key"), (value, "value"), (additionalKey, "additionalKey"), (additionalValue, "additionalValue"),
            (output, "output"), (logSumExp, "logSumExp"), (outputGrad, "outputGrad"), (queryGrad, "queryGrad"), (keyGrad, "keyGrad"),
            (valueGrad, "valueGrad"), (additionalKeyGrad, "additionalKeyGrad"), (additionalValueGrad, "additionalValueGrad"));
        DeviceTensorChecks.DistinctDestinations(
            [(query, "query"), (key, "key"), (value, "value"), (additionalKey, "additionalKey"), (additionalValue, "additionalValue"),
             (output, "output"), (logSumExp, "logSumExp"), (outputGrad, "outputGrad")],
            [(queryGrad, "queryGrad"), (keyGrad, "keyGrad"), (valueGrad, "valueGrad"), (additionalKeyGrad, "additionalKeyGrad"),
             (additionalValueGrad, "additionalValueGrad")]);
        var backend = (IDeviceAttentionBackend)BackendRegistry.Default.Choose(problem, options.Backend, AttentionPass.Backward, device.Compute);
        var s = stream ?? device.Accelerator.DefaultStream;
        if (elementType == ElementType.BFloat16)
        {
            backend.BackwardBFloat16(device.Compute, s, problem, BackwardViews<T, ushort>(
                query, key, value, additionalKey, additionalValue, output, logSumExp, outputGrad, queryGrad, keyGrad, valueGrad, additionalKeyGrad, additionalValueGrad));
        }
        else if (typeof(T) == typeof(float))
        {
            backend.Backward(device.Compute, s, problem, BackwardViews<T, float>(
                query, key, value, additionalKey, additionalValue, output, logSumExp, outputGrad, queryGrad, keyGrad, valueGrad, additionalKeyGrad, additionalValueGrad));
        }
        else
        {
            backend.Backward(device.Compute, s, problem, BackwardViews<T, ILGPU.Half>(
                query, key, value, additionalKey, additionalValue, output, logSumExp, outputGrad, queryGrad, keyGrad, valueGrad, additionalKeyGrad, additionalValueGrad));
        }
    }

    private static void DeviceForwardCore<T>(
        DeviceTensor<T> query, DeviceTensor<T> key, DeviceTensor<T> value, DeviceTensor<T>? additionalKey, DeviceTensor<T>? additionalValue,
        bool hasAdditional, AttentionShape shape, NeighborhoodAttentionOptions options, DeviceTensor<T> output,
        DeviceTensor<float>? logSumExp, AcceleratorStream? stream, ElementType elementType)
        where T : unmanaged
    {
        var problem = ProblemValidator.Validate(shape, options, elementType);
        ProblemValidator.CheckForwardLengths(
            problem,
            new ForwardLengths(query.Length, key.Length, value.Length, additionalKey?.Length ?? 0, additionalValue?.Length ?? 0, output.Length, logSumExp?.Length),
            hasAdditional);
        var device = DeviceTensorChecks.SameDevice(
            (query, "query"), (key, "key"), (value, "value"), (additionalKey, "additionalKey"), (additionalValue, "additionalValue"),
            (output, "output"), (logSumExp, "logSumExp"));
        DeviceTensorChecks.DistinctDestinations(
            [(query, "query"), (key, "key"), (value, "value"), (additionalKey, "additionalKey"), (additionalValue, "additionalValue")],
            [(output, "output"), (logSumExp, "logSumExp")]);
        var backend = (IDeviceAttentionBackend)BackendRegistry.Default.Choose(problem, options.Backend, AttentionPass.Forward, device.Compute);
        var s = stream ?? device.Accelerator.DefaultStream;
        var lse = logSumExp?.View ?? ArrayView<float>.Empty;
        if (elementType == ElementType.BFloat16)
        {
            backend.ForwardBFloat16(device.Compute, s, problem, new DeviceForward<ushort>(
                View<T, ushort>(query), View<T, ushort>(key), View<T, ushort>(value), View<T, ushort>(additionalKey),
                View<T, ushort>(additionalValue), View<T, ushort>(output), lse));
        }
        else if (typeof(T) == typeof(float))
        {
            backend.Forward(device.Compute, s, problem, new DeviceForward<float>(
                View<T, float>(query), View<T, float>(key), View<T, float>(value), View<T, float>(additionalKey),
                View<T, float>(additionalValue), View<T, float>(output), lse));
        }
        else
        {
            backend.Forward(device.Compute, s, problem, new DeviceForward<ILGPU.Half>(
                View<T, ILGPU.Half>(query), View<T, ILGPU.Half>(key), View<T, ILGPU.Half>(value), View<T, ILGPU.Half>(additionalKey),
                View<T, ILGPU.Half>(additionalValue), View<T, ILGPU.Half>(output), lse));
        }
    }

    private static DeviceBackward<TD> BackwardViews<T, TD>(
        DeviceTensor<T> q, DeviceTensor<T> k, DeviceTensor<T> v, DeviceTensor<T>? ak, DeviceTensor<T>? av, DeviceTensor<T> o,
        DeviceTensor<float> lse, DeviceTensor<T> dO, DeviceTensor<T> dq, DeviceTensor<T> dk, DeviceTensor<T> dv, DeviceTensor<T>? dak, DeviceTensor<T>? dav)
        where T : unmanaged
        where TD : unmanaged
        => new(
            View<T, TD>(q), View<T, TD>(k), View<T, TD>(v), View<T, TD>(ak), View<T, TD>(av), View<T, TD>(o), lse.View, View<T, TD>(dO),
            View<T, TD>(dq), View<T, TD>(dk), View<T, TD>(dv), View<T, TD>(dak), View<T, TD>(dav));

    /// <summary>The tensor's data as the kernels' element type (System.Half and ILGPU.Half share their bits).</summary>
    private static ArrayView<TD> View<T, TD>(DeviceTensor<T>? tensor)
        where T : unmanaged
        where TD : unmanaged
        => tensor is null ? ArrayView<TD>.Empty : tensor.View.Cast<TD>();

    private static ElementType ElementTypeOfDevice<T>()
        where T : unmanaged
        => typeof(T) == typeof(System.Half) ? ElementType.Float16
         : typeof(T) == typeof(float) ? ElementType.Float32
         : throw new NotSupportedException($"Device attention supports float and System.Half tensors, not {typeof(T).Name}.");
}
