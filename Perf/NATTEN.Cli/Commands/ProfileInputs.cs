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
    private Resident? _resident;
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
    public void Synchronize() => _resident?.Synchronize();

    /// <param name="options">Neighborhood and backend.</param>
    /// <param name="synchronize">On device-resident tensors, wait for the call before returning.</param>
    public void Forward(NeighborhoodAttentionOptions options, bool synchronize = true)
    {
        if (IsDeviceResident(options.Backend))
        {
            Device().Forward(options, synchronize);
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
            var device = Device();
            if (_residentForwardStale)
            {
                device.LoadForwardResult(_output, _lse);
                _residentForwardStale = false;
            }

            device.Backward(options, synchronize);
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

    public void Dispose() => _resident?.Dispose();

    private Resident Device() => _resident ??= _type switch
    {
        ElementType.Float16 => new Resident<Half>(this, t => t.F16!),
        ElementType.BFloat16 => new Resident<ushort>(this, t => t.Bf16!),
        _ => new Resident<float>(this, t => t.F32!),
    };

    /// <summary>The problem's tensors on the default accelerator (inputs uploaded once).</summary>
    private abstract class Resident : IDisposable
    {
        public abstract void Forward(NeighborhoodAttentionOptions options, bool synchronize);

        public abstract void Backward(NeighborhoodAttentionOptions options, bool synchronize);

        public abstract void Synchronize();

        public abstract void LoadForwardResult(Tensor output, float[] lse);

        public abstract void Dispose();
    }

    private sealed class Resident<T> : Resident
        where T : unmanaged
    {
        private readonly ProfileInputs _inputs;
        private readonly AttentionDevice _device = AttentionDevice.Default;
        private readonly DeviceTensor<T> _q, _k, _v, _ak, _av, _dO, _o, _dq, _dk, _dv, _dak, _dav;
        private readonly DeviceTensor<float> _lse;

        public Resident(ProfileInputs inputs, Func<Tensor, T[]> data)
        {
            _inputs = inputs;
            DeviceTensor<T> Up(Tensor t) => _device.Upload<T>(data(t), t.Length);
            DeviceTensor<T> Alloc(Tensor t) => _device.Allocate<T>(t.Length);
            (_q, _k, _v, _ak, _av, _dO) = (Up(inputs._query), Up(inputs._key), Up(inputs._value), Up(inputs._additionalKey), Up(inputs._additionalValue), Up(inputs._outputGrad));
            (_o, _dq, _dk, _dv, _dak, _dav) = (Alloc(inputs._output), Alloc(inputs._queryGrad), Alloc(inputs._keyGrad), Alloc(inputs._valueGrad),
                Alloc(inputs._additionalKeyGrad), Alloc(inputs._additionalValueGrad));
            _lse = _device.Allocate<float>(inputs._lse.Length);
            _device.Synchronize();
        }

        private bool Bf16 => _inputs._type == ElementType.BFloat16;

        public override void Synchronize() => _device.Synchronize();

        public override void Forward(NeighborhoodAttentionOptions options, bool synchronize)
        {
            var shape = _inputs._shape;
            if (Bf16)
            {
                var (q, k, v, o) = (As(_q), As(_k), As(_v), As(_o));
                if (_inputs.HasAdditional)
                {
                    NeighborhoodAttention.ForwardBFloat16(q, k, v, As(_ak), As(_av), shape, options, o, _lse);
                }
                else
                {
                    NeighborhoodAttention.ForwardBFloat16(q, k, v, shape, options, o, _lse);
                }
            }
            else if (_inputs.HasAdditional)
            {
                NeighborhoodAttention.Forward(_q, _k, _v, _ak, _av, shape, options, _o, _lse);
            }
            else
            {
                NeighborhoodAttention.Forward(_q, _k, _v, shape, options, _o, _lse);
            }

            if (synchronize)
            {
                _device.Synchronize();
            }
        }

        public override void Backward(NeighborhoodAttentionOptions options, bool synchronize)
        {
            var shape = _inputs._shape;
            var extra = _inputs.HasAdditional;
            if (Bf16)
            {
                NeighborhoodAttention.BackwardBFloat16(
                    As(_q), As(_k), As(_v), As(_o), _lse, As(_dO), shape, options, As(_dq), As(_dk), As(_dv),
                    extra ? As(_ak) : null, extra ? As(_av) : null, extra ? As(_dak) : null, extra ? As(_dav) : null);
            }
            else
            {
                NeighborhoodAttention.Backward(
                    _q, _k, _v, _o, _lse, _dO, shape, options, _dq, _dk, _dv,
                    extra ? _ak : null, extra ? _av : null, extra ? _dak : null, extra ? _dav : null);
            }

            if (synchronize)
            {
                _device.Synchronize();
            }
        }

        public override void LoadForwardResult(Tensor output, float[] lse)
        {
            _o.CopyFrom(output.Data<T>());
            _lse.CopyFrom(lse);
            _device.Synchronize();
        }

        public override void Dispose()
        {
            foreach (var t in new[] { _q, _k, _v, _ak, _av, _dO, _o, _dq, _dk, _dv, _dak, _dav })
            {
                t.Dispose();
            }

            _lse.Dispose();
        }

        /// <summary>bf16 tensors are <c>DeviceTensor&lt;ushort&gt;</c>; this instance holds them when <see cref="Bf16"/>.</summary>
        private static DeviceTensor<ushort> As(DeviceTensor<T> tensor) => (DeviceTensor<ushort>)(object)tensor;
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
