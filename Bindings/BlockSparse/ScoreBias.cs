using Natten.BlockSparse;
using Natten.Kernels.BlockSparse;
using Natten.Kernels.Runtime;

namespace Natten;

/// <summary>
/// An additive score bias for <see cref="BlockSparseAttention"/>: <c>s = scale · q·k + bias(b, h, q, k)</c>,
/// added in every listed block before the softmax. Immutable; its data is copied to an accelerator once on
/// first use there (<see cref="Dispose"/> frees the copies).
/// </summary>
/// <remarks>
/// Its gradient is opt-in: pass a <c>biasGradient</c> destination of <see cref="Length"/> floats (laid out like
/// the bias's values) to <see cref="BlockSparseAttention"/>'s backward. It receives
/// <c>d(bias)[i] = Σ dS(b, h, q, k)</c> over the allowed pairs that read value i (dS = P (dP − D), the
/// score gradient), i.e. summed over the batch entries and heads a shared bias is broadcast over and, for
/// <see cref="RelativePosition"/>, over every pair at that table offset; values no allowed pair reads get 0.
/// The fused backend computes it deterministically (fixed-order sums, no atomics).
/// </remarks>
public abstract class ScoreBias : IDisposable
{
    private readonly DeviceCache<DeviceBias> _devices = new();

    private protected ScoreBias()
    {
    }

    /// <summary>Batch entries the bias distinguishes: 1 (shared) or the batch size.</summary>
    public virtual int Batches => 1;

    /// <summary>Query heads the bias distinguishes: 1 (shared) or the head count.</summary>
    public abstract int Heads { get; }

    /// <summary>The query length the bias is built for.</summary>
    public abstract int QueryTokens { get; }

    /// <summary>The key length the bias is built for.</summary>
    public abstract int KeyTokens { get; }

    /// <summary>Number of bias values (the dense tensor's or the table's length): the length of a bias gradient.</summary>
    public abstract int Length { get; }

    /// <summary>The layout of the values, for messages.</summary>
    internal abstract string Layout { get; }

    /// <summary>The general per-head hook: a dense bias tensor <c>[batches, heads, Nq, Nk]</c> (finite values).</summary>
    /// <param name="values">The bias, row-major.</param>
    /// <param name="queryTokens">Nq.</param>
    /// <param name="keyTokens">Nk.</param>
    /// <param name="heads">1 for a bias shared by every head, else the head count.</param>
    /// <param name="batches">1 for a bias shared by every batch entry, else the batch size.</param>
    /// <returns>The bias.</returns>
    /// <exception cref="ArgumentException">A size is below 1, the length is wrong or a value is not finite.</exception>
    public static ScoreBias Dense(ReadOnlySpan<float> values, int queryTokens, int keyTokens, int heads = 1, int batches = 1)
    {
        ProblemValidator.CheckDenseBias(values, queryTokens, keyTokens, heads, batches);
        return new DenseScoreBias(values.ToArray(), queryTokens, keyTokens, heads, batches);
    }

    /// <summary>
    /// NATTEN's relative positional bias (RPB) for neighborhood attention on a 1–3D grid of tokens in
    /// row-major order: a table <c>[heads, 2·K0 − 1 (, 2·K1 − 1 (, 2·K2 − 1))]</c> read at
    /// <c>(j − i) / d + K − 1</c> per axis for query coordinate i and key coordinate j. Meant for the
    /// neighborhood pattern (<see cref="BlockMasks.Neighborhood"/>); pairs beyond the table's reach (with a
    /// wider pattern) get no bias.
    /// </summary>
    /// <param name="table">The table, row-major.</param>
    /// <param name="heads">Query heads (the table has one slice per head).</param>
    /// <param name="extents">The token grid, 1 to 3 axes.</param>
    /// <param name="kernelSize">The neighborhood's kernel size per axis.</param>
    /// <param name="dilation">Dilation per axis (default 1).</param>
    /// <returns>The bias.</returns>
    /// <exception cref="ArgumentException">A size is invalid, the table's length is wrong or a value is not finite.</exception>
    public static ScoreBias RelativePosition(ReadOnlySpan<float> table, int heads, AxisValues extents, AxisValues kernelSize, AxisValues dilation = default)
    {
        var (n, k, d) = ProblemValidator.CheckRelativePositionBias(table, heads, extents, kernelSize, dilation);
        return new RelativePositionScoreBias(table.ToArray(), heads, n, k, d);
    }

    /// <summary>The bias of one pair (in score units).</summary>
    /// <param name="batch">Batch entry (any value when <see cref="Batches"/> is 1).</param>
    /// <param name="head">Query head (any value when <see cref="Heads"/> is 1).</param>
    /// <param name="query">Query token.</param>
    /// <param name="key">Key token.</param>
    /// <returns>The additive bias.</returns>
    public abstract float Bias(int batch, int head, int query, int key);

    /// <summary>The value (flat index into the bias's values) a pair reads, or −1 for none.</summary>
    internal abstract long IndexOf(int batch, int head, int query, int key);

    /// <summary>How the fused backward fills a gradient of this bias for a problem of <paramref name="shape"/>.</summary>
    /// <param name="gradient">The destination (<see cref="Length"/> floats on the device).</param>
    /// <param name="shape">The problem's sizes.</param>
    /// <param name="entries">The mask's total listed blocks.</param>
    internal abstract BiasGradientTarget GradientTarget(ILGPU.ArrayView<float> gradient, in BlockSparseShape shape, int entries);

    /// <summary>Frees the device copies of the bias.</summary>
    public void Dispose()
    {
        _devices.Dispose();
        GC.SuppressFinalize(this);
    }

    internal IBiasSource OnDevice(ComputeDevice device) => _devices.Get(device, Upload);

    private protected abstract DeviceBias Upload(ComputeDevice device);

    /// <summary>A bias's device form: a source plus the buffers it owns.</summary>
    private protected sealed class DeviceBias(IBiasSource source, DeviceBuffers buffers) : IBiasSource, IDisposable
    {
        public void Accept(IBiasVisitor visitor) => source.Accept(visitor);

        public void Dispose() => buffers.Dispose();
    }

    /// <summary>A bias source for one struct.</summary>
    private protected sealed class StructSource<TBias>(TBias bias) : IBiasSource
        where TBias : struct, IScoreBias
    {
        public void Accept(IBiasVisitor visitor) => visitor.Visit(bias);
    }
}
