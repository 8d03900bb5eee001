namespace Natten.Cli.Commands;

/// <summary>
/// Random, seeded tensors of one problem (float32, float16 or bfloat16 storage) and the destinations each
/// pass writes. Backends that take device tensors (<see cref="AttentionBackends.RunsOnDeviceTensors"/>) are
/// timed on copies resident on the default accelerator — uploaded once, outside the timed region — so a
/// timing is the attention work plus launch overhead, as FlexAttention's anchor measures it on GPU tensors;
/// the others are timed on host spans.
/// </summary>
internal sealed class ProfileInputs : IDisposable
{
    private readonly AttentionShape _shape;
    private readonly ElementType _type;
    private readonly Tensor _query, _key, _value, _additionalKey, _additionalValue, _outputGrad;
    private readonly Tensor _output, _queryGrad, _keyGrad, _valueGrad, _additionalKeyGrad, _additionalValueGrad;
    private readonly float[] _lse;
    private DeviceCopies? _device;
    private bool _residentForwardStale = true;

    public ProfileInputs(AttentionShape shape, ElementType type, int seed)
    {
        _shape = shape;
        _type = type;
        var rng = new Random(seed);
        long tokens = 1;
        for (var a = 0; a < shape.Rank; a++)
        {
            tokens *= shape.Spatial[a];
        }

        long rows = shape.Batch * tokens, extra = (long)shape.Batch * shape.AdditionalTokens;
        Tensor Random(long count) => Tensor.Random(rng, count, type);
        Tensor Zero(long count) => Tensor.Zero(count, type);
        _query = Random(rows * shape.Heads * shape.HeadDim);
        _key = Random(rows * shape.KvHeads * shape.HeadDim);
        _value = Random(rows * shape.KvHeads * shape.ValueDim);
        _additionalKey = Random(extra * shape.KvHeads * shape.HeadDim);
        _additionalValue = Random(extra * shape.KvHeads * shape.ValueDim);
        _outputGrad = Random(rows * shape.Heads * shape.ValueDim);
        _output = Zero(rows * shape.Heads * shape.ValueDim);
        _lse = Tensor.Zero(rows * shape.Heads, ElementType.Float32).F32!;
        _queryGrad = Zero(_query.Length);
        _keyGrad = Zero(_key.Length);
        _valueGrad = Zero(_value.Length);
        _additionalKeyGrad = Zero(_additionalKey.Length);
        _additionalValueGrad = Zero(_additionalValue.Length);
    }

    private bool HasAdditional => _shape.AdditionalTokens > 0;

    /// <summary>Whether a run of <paramref name="backend"/> is timed on device-resident tensors.</summary>
    public static bool IsDeviceResident(string? backend) => backend is not null && AttentionBackends.RunsOnDeviceTensors(backend);

    /// <summary>Waits for the device-resident work queued so far (nothing to wait for on host spans).</summary>
    public void Synchronize() => _device?.Synchronize();

    /// <param name="options">Neighborhood and backend.</param>
    /// <param name="synchronize">On device-resident tensors, wait for the call before returning.</param>
    public void Forward(NeighborhoodAttentionOptions options, bool synchronize = true)
    {
        if (IsDeviceResident(options.Backend))
        {
            switch (_type)
            {
                case ElementType.Float16:
                    DeviceForward<Half>(options);
                    break;
                case ElementType.BFloat16:
                    DeviceForward<ushort>(options);
                    break;
                default:
                    DeviceForward<float>(options);
                    break;
            }

            if (synchronize)
            {
                Synchronize();
            }

            return;
        }

        switch (_type)
        {
            case ElementType.Float16 when HasAdditional:
                NeighborhoodAttention.Forward(_query.F16, _key.F16!, _value.F16!, _additionalKey.F16!, _additionalValue.F16!, _shape, options, _output.F16!, _lse);
                break;
            case ElementType.Float16:
                NeighborhoodAttention.Forward(_query.F16, _key.F16!, _value.F16!, _shape, options, _output.F16!, _lse);
                break;
            case ElementType.BFloat16 when HasAdditional:
                NeighborhoodAttention.ForwardBFloat16(_query.Bf16, _key.Bf16!, _value.Bf16!, _additionalKey.Bf16!, _additionalValue.Bf16!, _shape, options, _output.Bf16!, _lse);
                break;
            case ElementType.BFloat16:
                NeighborhoodAttention.ForwardBFloat16(_query.Bf16, _key.Bf16!, _value.Bf16!, _shape, options, _output.Bf16!, _lse);
                break;
            case ElementType.Float32 when HasAdditional:
                NeighborhoodAttention.Forward(_query.F32, _key.F32!, _value.F32!, _additionalKey.F32!, _additionalValue.F32!, _shape, options, _output.F32!, _lse);
                break;
            default:
                NeighborhoodAttention.Forward(_query.F32, _key.F32!, _value.F32!, _shape, options, _output.F32!, _lse);
                break;
        }
    }

    /// <summary>
    /// Whether this harness can time <paramref name="backend"/>'s backward: the 16-bit host-span backward entry
    /// points take no additional tokens (the device-tensor ones, used for the ILGPU backends, do).
    /// </summary>
    public bool CanRunBackward(string backend, out string reason)
    {
        if (_type != ElementType.Float32 && HasAdditional && !IsDeviceResident(backend))
        {
            reason = "the library's float16/bfloat16 host-span backward takes no additional tokens";
            return false;
        }

        reason = string.Empty;
        return true;
    }

    /// <summary>Computes the forward output and LSE the backward pass reads (with the automatic backend, on host spans).</summary>
    public bool TryPrepareBackward(NeighborhoodAttentionOptions options, out string reason)
    {
        try
        {
            Forward(options with { Backend = null });
        }
        catch (NotSupportedException ex)
        {
            reason = $"no forward output to differentiate: {ex.Message}";
            return false;
        }

        _residentForwardStale = true;
        reason = string.Empty;
        return true;
    }

    /// <param name="options">Neighborhood and backend.</param>
    /// <param name="synchronize">On device-resident tensors, wait for the call before returning.</param>
    public void Backward(NeighborhoodAttentionOptions options, bool synchronize = true)
    {
        if (IsDeviceResident(options.Backend))
        {
            switch (_type)
            {
                case ElementType.Float16:
                    DeviceBackward<Half>(options);
                    break;
                case ElementType.BFloat16:
                    DeviceBackward<ushort>(options);
                    break;
                default:
                    DeviceBackward<float>(options);
                    break;
            }

            if (synchronize)
            {
                Synchronize();
            }

            return;
        }

        switch (_type)
        {
            case ElementType.Float16:
                NeighborhoodAttention.Backward(
                    _query.F16, _key.F16!, _value.F16!, _output.F16!, _lse, _outputGrad.F16!, _shape, options, _queryGrad.F16!, _keyGrad.F16!, _valueGrad.F16!);
                break;
            case ElementType.BFloat16:
                NeighborhoodAttention.BackwardBFloat16(
                    _query.Bf16, _key.Bf16!, _value.Bf16!, _output.Bf16!, _lse, _outputGrad.Bf16!, _shape, options, _queryGrad.Bf16!, _keyGrad.Bf16!, _valueGrad.Bf16!);
                break;
            case ElementType.Float32 when HasAdditional:
                NeighborhoodAttention.Backward(
                    _query.F32, _key.F32!, _value.F32!, _additionalKey.F32!, _additionalValue.F32!, _output.F32!, _lse, _outputGrad.F32!, _shape, options,
                    _queryGrad.F32!, _keyGrad.F32!, _valueGrad.F32!, _additionalKeyGrad.F32!, _additionalValueGrad.F32!);
                break;
            default:
                NeighborhoodAttention.Backward(
                    _query.F32, _key.F32!, _value.F32!, _output.F32!, _lse, _outputGrad.F32!, _shape, options, _queryGrad.F32!, _keyGrad.F32!, _valueGrad.F32!);
                break;
        }
    }

    public void Dispose() => _device?.Dispose();

    private void DeviceForward<T>(NeighborhoodAttentionOptions options)
        where T : unmanaged
    {
        var d = _device ??= new DeviceCopies();
        var (q, k, v, o, lse) = (d.Input<T>(_query), d.Input<T>(_key), d.Input<T>(_value), d.Output<T>(_output), d.Output(_lse));
        if (_type == ElementType.BFloat16)
        {
            if (HasAdditional)
            {
                NeighborhoodAttention.ForwardBFloat16(
                    DeviceCopies.Bits(q), DeviceCopies.Bits(k), DeviceCopies.Bits(v), DeviceCopies.Bits(d.Input<T>(_additionalKey)),
                    DeviceCopies.Bits(d.Input<T>(_additionalValue)), _shape, options, DeviceCopies.Bits(o), lse);
            }
            else
            {
                NeighborhoodAttention.ForwardBFloat16(DeviceCopies.Bits(q), DeviceCopies.Bits(k), DeviceCopies.Bits(v), _shape, options, DeviceCopies.Bits(o), lse);
            }
        }
        else if (HasAdditional)
        {
            NeighborhoodAttention.Forward(q, k, v, d.Input<T>(_additionalKey), d.Input<T>(_additionalValue), _shape, options, o, lse);
        }
        else
        {
            NeighborhoodAttention.Forward(q, k, v, _shape, options, o, lse);
        }
    }

    private void DeviceBackward<T>(NeighborhoodAttentionOptions options)
        where T : unmanaged
    {
        var d = _device ??= new DeviceCopies();
        if (_residentForwardStale)
        {
            d.Refresh<T>(_output);
            d.Refresh(_lse);
            _residentForwardStale = false;
        }

        var (q, k, v, o, lse, dO) = (d.Input<T>(_query), d.Input<T>(_key), d.Input<T>(_value), d.Output<T>(_output), d.Output(_lse), d.Input<T>(_outputGrad));
        var (dq, dk, dv) = (d.Output<T>(_queryGrad), d.Output<T>(_keyGrad), d.Output<T>(_valueGrad));
        var (ak, av, dak, dav) = HasAdditional
            ? (d.Input<T>(_additionalKey), d.Input<T>(_additionalValue), d.Output<T>(_additionalKeyGrad), d.Output<T>(_additionalValueGrad))
            : (null, null, null, null);
        if (_type == ElementType.BFloat16)
        {
            static DeviceTensor<ushort>? Optional(DeviceTensor<T>? t) => t is null ? null : DeviceCopies.Bits(t);
            NeighborhoodAttention.BackwardBFloat16(
                DeviceCopies.Bits(q), DeviceCopies.Bits(k), DeviceCopies.Bits(v), DeviceCopies.Bits(o), lse, DeviceCopies.Bits(dO), _shape, options,
                DeviceCopies.Bits(dq), DeviceCopies.Bits(dk), DeviceCopies.Bits(dv), Optional(ak), Optional(av), Optional(dak), Optional(dav));
        }
        else
        {
            NeighborhoodAttention.Backward(q, k, v, o, lse, dO, _shape, options, dq, dk, dv, ak, av, dak, dav);
        }
    }
}

/// <summary>
/// Copies of a profile's host tensors on the default accelerator, made once per tensor and reused by every timed
/// call: inputs uploaded, destinations allocated. The forward result a backward reads is copied over again with
/// <see cref="Refresh{T}"/> after the host computes it.
/// </summary>
internal sealed class DeviceCopies : IDisposable
{
    private readonly Dictionary<object, IDisposable> _copies = new(ReferenceEqualityComparer.Instance);
    private readonly AttentionDevice _device = AttentionDevice.Default;

    /// <summary>bf16 data travels as <c>DeviceTensor&lt;ushort&gt;</c>; this is that tensor when <typeparamref name="T"/> is ushort.</summary>
    public static DeviceTensor<ushort> Bits<T>(DeviceTensor<T> tensor)
        where T : unmanaged
        => (DeviceTensor<ushort>)(object)tensor;

    /// <summary>The device copy of an input, uploaded on first use.</summary>
    public DeviceTensor<T> Input<T>(Tensor host)
        where T : unmanaged
        => Get(host, () => _device.Upload<T>(host.Data<T>(), host.Length));

    /// <summary>A device destination the size of <paramref name="host"/>, allocated on first use.</summary>
    public DeviceTensor<T> Output<T>(Tensor host)
        where T : unmanaged
        => Get(host, () => _device.Allocate<T>(host.Length));

    /// <summary>A float32 device destination the size of <paramref name="host"/> (the LSE).</summary>
    public DeviceTensor<float> Output(float[] host) => Get(host, () => _device.Allocate<float>(host.Length));

    /// <summary>Copies the host values over the device copy (allocating it first if needed).</summary>
    public void Refresh<T>(Tensor host)
        where T : unmanaged
        => Output<T>(host).CopyFrom(host.Data<T>());

    /// <summary>Copies the host values over the float32 device copy.</summary>
    public void Refresh(float[] host) => Output(host).CopyFrom(host);

    public void Synchronize() => _device.Synchronize();

    public void Dispose()
    {
        foreach (var copy in _copies.Values)
        {
            copy.Dispose();
        }

        _copies.Clear();
    }

    private DeviceTensor<T> Get<T>(object host, Func<DeviceTensor<T>> create)
        where T : unmanaged
    {
        if (!_copies.TryGetValue(host, out var copy))
        {
            copy = create();
            _copies.Add(host, copy);
        }

        return (DeviceTensor<T>)copy;
    }
}

/// <summary>A float32, float16 or bfloat16 (bits) buffer.</summary>
internal sealed record Tensor(float[]? F32, Half[]? F16, ushort[]? Bf16)
{
    public int Length => F32?.Length ?? F16?.Length ?? Bf16!.Length;

    public T[] Data<T>() => (T[])(object)(F32 ?? (object?)F16 ?? Bf16!);

    public static Tensor Zero(long count, ElementType type)
    {
        if (count > Array.MaxLength)
        {
            throw CliException.Usage($"the problem needs a tensor of {count} elements; one array holds at most {Array.MaxLength}.");
        }

        var n = (int)count;
        return type switch
        {
            ElementType.Float16 => new Tensor(null, new Half[n], null),
            ElementType.BFloat16 => new Tensor(null, null, new ushort[n]),
            _ => new Tensor(new float[n], null, null),
        };
    }

    public static Tensor Random(Random rng, long count, ElementType type)
    {
        var tensor = Zero(count, type);
        for (var i = 0; i < tensor.Length; i++)
        {
            var x = (rng.NextSingle() * 2) - 1;
            switch (type)
            {
                case ElementType.Float16:
                    tensor.F16![i] = (Half)x;
                    break;
                case ElementType.BFloat16:
                    tensor.Bf16![i] = BFloat16Conversions.FromSingle(x);
                    break;
                default:
                    tensor.F32![i] = x;
                    break;
            }
        }

        return tensor;
    }
}
