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
    /// Backend name (see <see cref="AttentionBackends.Names"/>), or <c>null</c> to pick the fastest
    /// backend that can run the problem.
    /// </summary>
    public string? Backend { get; init; }
}
