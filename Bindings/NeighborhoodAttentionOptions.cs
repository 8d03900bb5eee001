namespace Natten;

/// <summary>
/// The neighborhood of each query (docs/SEMANTICS.md) and how to run it. Per-axis values accept a
/// single value for every axis: <c>new NeighborhoodAttentionOptions(7) { Dilation = (1, 2) }</c>.
/// </summary>
/// <remarks>
/// Valid when, on every axis of length n: kernel size K ≥ 2, dilation d ≥ 1 with K·d ≤ n, and stride
/// 1 ≤ s ≤ K. Unspecified stride and dilation mean 1; unspecified causal means non-causal.
/// </remarks>
public readonly record struct NeighborhoodAttentionOptions
{
    /// <summary>Options with the given kernel size and defaults for everything else.</summary>
    public NeighborhoodAttentionOptions(AxisValues kernelSize) => KernelSize = kernelSize;

    /// <summary>Kernel (window) size K per axis. Required.</summary>
    public AxisValues KernelSize { get; init; }

    /// <summary>Stride s per axis (queries of one stride group share one window). Default 1.</summary>
    public AxisValues Stride { get; init; }

    /// <summary>Dilation d per axis. Default 1.</summary>
    public AxisValues Dilation { get; init; }

    /// <summary>Causal masking per axis. Default non-causal.</summary>
    public AxisFlags Causal { get; init; }

    /// <summary>Score scale; default <c>1 / sqrt(HeadDim)</c>. Must be finite and positive.</summary>
    public double? Scale { get; init; }

    /// <summary>Tile shapes for the <c>fused</c> backend; <c>null</c> picks defaults per rank and head dimension.</summary>
    public FusedTiles? Tiles { get; init; }

    /// <summary>
    /// Lets the <c>fused</c> backend run the float32 forward on TF32 tensor cores (Q, K, V and the attention
    /// weights rounded to TF32's 10 mantissa bits, float32 accumulation; ~1e-3 relative error instead of
    /// ~1e-7) when the head dims are multiples of 8 and the tiles fit. Off by default; like PyTorch's
    /// <c>allow_tf32</c>, an opt-in trade of precision for speed. Ignored for float16/bfloat16 data (already on
    /// tensor cores), by the other backends, and by the backward pass (float32 math).
    /// </summary>
    public bool AllowTf32 { get; init; }

    /// <summary>
    /// Backend name (see <see cref="AttentionBackends.Names"/>), or <c>null</c> to pick the fastest
    /// backend that can run the problem.
    /// </summary>
    public string? Backend { get; init; }
}
