namespace Natten.Backends;

/// <summary>The spans of one forward call, validated against its problem.</summary>
internal readonly ref struct ForwardTensors<T>
    where T : unmanaged
{
    public ReadOnlySpan<T> Query { get; init; }

    public ReadOnlySpan<T> Key { get; init; }

    public ReadOnlySpan<T> Value { get; init; }

    public ReadOnlySpan<T> AdditionalKey { get; init; }

    public ReadOnlySpan<T> AdditionalValue { get; init; }

    public Span<T> Output { get; init; }

    /// <summary>Empty when the caller wants no LSE.</summary>
    public Span<float> LogSumExp { get; init; }
}

/// <summary>The spans of one backward call, validated against its problem.</summary>
internal readonly ref struct BackwardTensors<T>
    where T : unmanaged
{
    public ReadOnlySpan<T> Query { get; init; }

    public ReadOnlySpan<T> Key { get; init; }

    public ReadOnlySpan<T> Value { get; init; }

    public ReadOnlySpan<T> AdditionalKey { get; init; }

    public ReadOnlySpan<T> AdditionalValue { get; init; }

    public ReadOnlySpan<T> Output { get; init; }

    public ReadOnlySpan<float> LogSumExp { get; init; }

    public ReadOnlySpan<T> OutputGrad { get; init; }

    public Span<T> QueryGrad { get; init; }

    public Span<T> KeyGrad { get; init; }

    public Span<T> ValueGrad { get; init; }

    public Span<T> AdditionalKeyGrad { get; init; }

    public Span<T> AdditionalValueGrad { get; init; }

    /// <summary>Block-sparse only: the score bias's gradient; empty when the caller wants none.</summary>
    public Span<float> BiasGradient { get; init; }
}
