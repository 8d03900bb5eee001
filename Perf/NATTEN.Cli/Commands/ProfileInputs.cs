namespace Natten.Cli.Commands;

/// <summary>Random, seeded tensors of one problem and the destinations each pass writes.</summary>
internal sealed class ProfileInputs
{
    private readonly AttentionShape _shape;
    private readonly Tensor _query, _key, _value, _additionalKey, _additionalValue, _outputGrad;
    private readonly Tensor _output, _queryGrad, _keyGrad, _valueGrad, _additionalKeyGrad, _additionalValueGrad;
    private readonly float[] _lse;

    public ProfileInputs(AttentionShape shape, bool isFloat16, int seed)
    {
        _shape = shape;
        var rng = new Random(seed);
        long tokens = 1;
        for (var a = 0; a < shape.Rank; a++)
        {
            tokens *= shape.Spatial[a];
        }

        long rows = shape.Batch * tokens, extra = (long)shape.Batch * shape.AdditionalTokens;
        Tensor Random(long count) => Tensor.Random(rng, count, isFloat16);
        Tensor Zero(long count) => Tensor.Zero(count, isFloat16);
        _query = Random(rows * shape.Heads * shape.HeadDim);
        _key = Random(rows * shape.KvHeads * shape.HeadDim);
        _value = Random(rows * shape.KvHeads * shape.ValueDim);
        _additionalKey = Random(extra * shape.KvHeads * shape.HeadDim);
        _additionalValue = Random(extra * shape.KvHeads * shape.ValueDim);
        _outputGrad = Random(rows * shape.Heads * shape.ValueDim);
        _output = Zero(rows * shape.Heads * shape.ValueDim);
        _lse = Tensor.Zero(rows * shape.Heads, isFloat16: false).F32!;
        _queryGrad = Zero(_query.Length);
        _keyGrad = Zero(_key.Length);
        _valueGrad = Zero(_value.Length);
        _additionalKeyGrad = Zero(_additionalKey.Length);
        _additionalValueGrad = Zero(_additionalValue.Length);
    }

    private bool HasAdditional => _shape.AdditionalTokens > 0;

    public void Forward(NeighborhoodAttentionOptions options)
    {
        if (_query.F16 is not null)
        {
            if (HasAdditional)
            {
                NeighborhoodAttention.Forward(
                    _query.F16, _key.F16!, _value.F16!, _additionalKey.F16!, _additionalValue.F16!, _shape, options, _output.F16!, _lse);
            }
            else
            {
                NeighborhoodAttention.Forward(_query.F16, _key.F16!, _value.F16!, _shape, options, _output.F16!, _lse);
            }
        }
        else if (HasAdditional)
        {
            NeighborhoodAttention.Forward(
                _query.F32!, _key.F32!, _value.F32!, _additionalKey.F32!, _additionalValue.F32!, _shape, options, _output.F32!, _lse);
        }
        else
        {
            NeighborhoodAttention.Forward(_query.F32!, _key.F32!, _value.F32!, _shape, options, _output.F32!, _lse);
        }
    }

    /// <summary>Computes the forward output and LSE the backward pass reads (with the automatic backend).</summary>
    public bool TryPrepareBackward(NeighborhoodAttentionOptions options, out string reason)
    {
        if (_query.F16 is not null && HasAdditional)
        {
            reason = "the library has no float16 backward with additional tokens";
            return false;
        }

        try
        {
            Forward(options with { Backend = null });
        }
        catch (NotSupportedException ex)
        {
            reason = $"no forward output to differentiate: {ex.Message}";
            return false;
        }

        reason = string.Empty;
        return true;
    }

    public void Backward(NeighborhoodAttentionOptions options)
    {
        if (_query.F16 is not null)
        {
            NeighborhoodAttention.Backward(
                _query.F16, _key.F16!, _value.F16!, _output.F16!, _lse, _outputGrad.F16!, _shape, options,
                _queryGrad.F16!, _keyGrad.F16!, _valueGrad.F16!);
        }
        else if (HasAdditional)
        {
            NeighborhoodAttention.Backward(
                _query.F32!, _key.F32!, _value.F32!, _additionalKey.F32!, _additionalValue.F32!,
                _output.F32!, _lse, _outputGrad.F32!, _shape, options,
                _queryGrad.F32!, _keyGrad.F32!, _valueGrad.F32!, _additionalKeyGrad.F32!, _additionalValueGrad.F32!);
        }
        else
        {
            NeighborhoodAttention.Backward(
                _query.F32!, _key.F32!, _value.F32!, _output.F32!, _lse, _outputGrad.F32!, _shape, options,
                _queryGrad.F32!, _keyGrad.F32!, _valueGrad.F32!);
        }
    }
}

/// <summary>A float32 or float16 buffer.</summary>
internal sealed record Tensor(float[]? F32, Half[]? F16)
{
    public int Length => F32?.Length ?? F16!.Length;

    public static Tensor Zero(long count, bool isFloat16)
    {
        if (count > Array.MaxLength)
        {
            throw CliException.Usage($"the problem needs a tensor of {count} elements; one array holds at most {Array.MaxLength}.");
        }

        var n = (int)count;
        return isFloat16 ? new Tensor(null, new Half[n]) : new Tensor(new float[n], null);
    }

    public static Tensor Random(Random rng, long count, bool isFloat16)
    {
        var tensor = Zero(count, isFloat16);
        for (var i = 0; i < tensor.Length; i++)
        {
            var x = (rng.NextSingle() * 2) - 1;
            if (isFloat16)
            {
                tensor.F16![i] = (Half)x;
            }
            else
            {
                tensor.F32![i] = x;
            }
        }

        return tensor;
    }
}
