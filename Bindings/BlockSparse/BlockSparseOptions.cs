namespace Natten;

/// <summary>How to run block-sparse attention: scale, optional score bias, backend and tiling.</summary>
public readonly record struct BlockSparseOptions
{
    /// <summary>Score scale; default <c>1 / sqrt(HeadDim)</c>. Must be finite and positive.</summary>
    public double? Scale { get; init; }

    /// <summary>
    /// Optional additive score bias: <c>s = scale · q·k + bias</c>. Its gradient is opt-in: pass a
    /// <c>biasGradient</c> destination to the backward (see <see cref="ScoreBias"/>).
    /// </summary>
    public ScoreBias? Bias { get; init; }

    /// <summary>
    /// Backend name (see <see cref="BlockSparseAttention.BackendNames"/>), or <c>null</c> for the first
    /// that can run the problem.
    /// </summary>
    public string? Backend { get; init; }

    /// <summary>Work split of the fused kernels; <c>null</c> picks defaults per block size and head dimension.</summary>
    public BlockSparseTiling? Tiling { get; init; }
}

/// <summary>
/// The fused block-sparse kernels' work split: <see cref="Queries"/> threads (one query each) per group
/// in the forward and dQ kernels, staging <see cref="Keys"/> keys at a time; the dK/dV kernel runs
/// <see cref="KeyThreads"/> threads (one key each), staging <see cref="StagedQueries"/> queries at a time.
/// Values above the block size are cut to it.
/// </summary>
/// <param name="Queries">Queries per group (forward, dQ).</param>
/// <param name="Keys">Keys staged per step (forward, dQ).</param>
/// <param name="KeyThreads">Keys per group (dK/dV); 0 means <paramref name="Queries"/>.</param>
/// <param name="StagedQueries">Queries staged per step (dK/dV); 0 means <paramref name="Keys"/>.</param>
public readonly record struct BlockSparseTiling(int Queries, int Keys, int KeyThreads = 0, int StagedQueries = 0);
