using Natten.BlockSparse;
using Natten.Kernels.BlockSparse;
using Natten.Kernels.Runtime;

namespace Natten;

/// <summary>
/// The element predicate of a <see cref="BlockMask"/>'s partial blocks: whether query token <c>q</c>
/// of (batch, query head) may attend to key token <c>k</c>. Immutable; the kernels evaluate it on the
/// device through a mask struct chosen per pattern (no kernel edit per pattern), so only the kinds
/// below exist: a dense boolean mask, a sliding window (FlashAttention's <c>window_size</c>), segment
/// ids (documents, regions, padding), a window on a 1–3D grid (HaloNet) and their conjunction.
/// </summary>
/// <remarks>
/// Masks with data (dense, segments) copy it once per accelerator on first use and keep the copy;
/// <see cref="Dispose"/> frees those copies (a later use uploads again).
/// </remarks>
public abstract class ElementMask : IDisposable
{
    private readonly DeviceCache<DeviceElementMask> _devices = new();

    private protected ElementMask()
    {
    }

    /// <summary>FlashAttention's causal mask for equal query and key lengths: key <c>k</c> is visible to query <c>q</c> iff <c>k ≤ q</c>.</summary>
    public static ElementMask Causal { get; } = new SlidingWindowElementMask(-1, 0, 0);

    /// <summary>
    /// Batch entries the mask distinguishes: 1 when it is the same for every batch entry, else the batch size.
    /// </summary>
    public virtual int Batches => 1;

    /// <summary>Query heads the mask distinguishes: 1 when it is the same for every head, else the head count.</summary>
    public virtual int Heads => 1;

    /// <summary>The query length the mask is built for, or null when it applies to any length.</summary>
    public virtual int? QueryTokens => null;

    /// <summary>The key length the mask is built for, or null when it applies to any length.</summary>
    public virtual int? KeyTokens => null;

    /// <summary>
    /// FlashAttention's <c>window_size = (left, right)</c>: query <c>q</c> sees keys
    /// <c>q + offset − left ≤ k ≤ q + offset + right</c>, truncated at the sequence ends (never shifted).
    /// </summary>
    /// <param name="left">Keys to the left; −1 for no limit.</param>
    /// <param name="right">Keys to the right; −1 for no limit (0 with <c>left = −1</c> is causal).</param>
    /// <param name="offset">
    /// Which key query 0 is aligned with. FlashAttention aligns the last query with the last key:
    /// <c>offset = Nk − Nq</c> (0 for self-attention).
    /// </param>
    /// <exception cref="ArgumentException"><paramref name="left"/> or <paramref name="right"/> is below −1.</exception>
    public static ElementMask SlidingWindow(int left, int right, int offset = 0)
    {
        ProblemValidator.CheckWindow(left, right);
        return new SlidingWindowElementMask(left, right, offset);
    }

    /// <summary>
    /// Segment ids per token (documents of a packed sequence, regions of an image, subjects): query
    /// <c>q</c> sees key <c>k</c> iff both carry the same id and it is not negative. A negative id marks
    /// padding: such a key is seen by no query, such a query sees nothing (output 0, LSE −∞).
    /// </summary>
    /// <param name="querySegments">Ids of the query tokens, <c>[batches, Nq]</c> (the flattened 1–3D token grid).</param>
    /// <param name="keySegments">Ids of the key tokens, <c>[batches, Nk]</c>.</param>
    /// <param name="batches">1 for ids shared by every batch entry, else the batch size.</param>
    /// <exception cref="ArgumentException">A length is not a multiple of <paramref name="batches"/>, or empty.</exception>
    public static ElementMask Segments(ReadOnlySpan<int> querySegments, ReadOnlySpan<int> keySegments, int batches = 1)
    {
        ProblemValidator.CheckSegments(querySegments.Length, keySegments.Length, batches);
        return new SegmentElementMask(querySegments.ToArray(), keySegments.ToArray(), batches);
    }

    /// <summary>Segment ids for self-attention: the same ids for queries and keys.</summary>
    /// <param name="segments">Ids per token, <c>[batches, N]</c>.</param>
    /// <param name="batches">1 for ids shared by every batch entry, else the batch size.</param>
    /// <exception cref="ArgumentException">The length is not a multiple of <paramref name="batches"/>, or empty.</exception>
    public static ElementMask Segments(ReadOnlySpan<int> segments, int batches = 1) => Segments(segments, segments, batches);

    /// <summary>A dense boolean mask <c>[batches, heads, Nq, Nk]</c> (true = attend), stored as bits.</summary>
    /// <param name="mask">The mask, row-major.</param>
    /// <param name="queryTokens">Nq.</param>
    /// <param name="keyTokens">Nk.</param>
    /// <param name="heads">1 for a mask shared by every head, else the head count.</param>
    /// <param name="batches">1 for a mask shared by every batch entry, else the batch size.</param>
    /// <exception cref="ArgumentException">A size is below 1 or the mask's length is not their product.</exception>
    public static ElementMask Dense(ReadOnlySpan<bool> mask, int queryTokens, int keyTokens, int heads = 1, int batches = 1)
    {
        ProblemValidator.CheckDenseMask(mask.Length, queryTokens, keyTokens, heads, batches, "mask");
        return new DenseElementMask(mask, queryTokens, keyTokens, heads, batches);
    }

    /// <summary>
    /// A window on a 1–3D grid of tokens (self-attention): per axis, queries are grouped in runs of
    /// <paramref name="group"/> and a query whose group starts at <c>s</c> sees the key coordinates
    /// <c>s − before … s + group − 1 + after</c> that exist — keys outside the grid are simply absent
    /// (zero padding), nothing is shifted. <c>group = b, before = after = h</c> is HaloNet's blocked local
    /// attention; <c>group = 1</c> a truncated sliding window.
    /// </summary>
    /// <param name="extents">The grid, 1 to 3 axes; its product is the token count.</param>
    /// <param name="group">Query group (block) per axis.</param>
    /// <param name="before">Reach before the group per axis.</param>
    /// <param name="after">Reach after the group per axis.</param>
    /// <param name="tokenTile">
    /// Token order: tokens come in tiles of this extent (tile-major, row-major inside a tile), which
    /// makes each 2D/3D block one contiguous run; unspecified (or 1) is plain row-major order. Must divide
    /// the extents.
    /// </param>
    /// <exception cref="ArgumentException">An extent, group or tile is below 1, a reach is negative, or a tile does not divide its extent.</exception>
    public static ElementMask GridWindow(AxisValues extents, AxisValues group, AxisValues before, AxisValues after, AxisValues tokenTile = default)
    {
        var axes = ProblemValidator.CheckGridWindow(extents, group, before, after, tokenTile);
        return new GridElementMask(axes);
    }

    /// <summary>Both masks must allow a pair (e.g. a document mask AND causal).</summary>
    /// <param name="other">The second mask.</param>
    /// <returns>The conjunction.</returns>
    /// <exception cref="ArgumentException">The two masks are built for different token counts or incompatible batch/head counts.</exception>
    public ElementMask And(ElementMask other)
    {
        ArgumentNullException.ThrowIfNull(other);
        ProblemValidator.CheckConjunction(this, other);
        return new AndElementMask(this, other);
    }

    /// <summary>Whether query token <paramref name="query"/> of (<paramref name="batch"/>, <paramref name="head"/>) may see key token <paramref name="key"/>.</summary>
    /// <param name="batch">Batch entry (any value when <see cref="Batches"/> is 1).</param>
    /// <param name="head">Query head (any value when <see cref="Heads"/> is 1).</param>
    /// <param name="query">Query token.</param>
    /// <param name="key">Key token.</param>
    /// <returns>True when the pair is allowed.</returns>
    public abstract bool Allows(int batch, int head, int query, int key);

    /// <summary>Frees the device copies of the mask's data.</summary>
    public void Dispose()
    {
        _devices.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>
    /// Which kind of block the pairs [q0, q1) × [k0, k1) of one (batch, head) form: null when none is
    /// allowed, <see cref="BlockKind.Full"/> when all are. Brute force unless a pattern knows better.
    /// </summary>
    internal virtual BlockKind? Classify(int batch, int head, int q0, int q1, int k0, int k1)
    {
        bool any = false, all = true;
        for (var q = q0; q < q1; q++)
        {
            for (var k = k0; k < k1; k++)
            {
                if (Allows(batch, head, q, k))
                {
                    any = true;
                }
                else
                {
                    all = false;
                }

                if (any && !all)
                {
                    return BlockKind.Partial;
                }
            }
        }

        return !any ? null : all ? BlockKind.Full : BlockKind.Partial;
    }

    /// <summary>The mask's struct on <paramref name="device"/> (its data uploaded once per device).</summary>
    internal IMaskSource OnDevice(ComputeDevice device) => _devices.Get(device, Upload);

    /// <summary>Uploads the mask's data (if any) and returns its device form.</summary>
    private protected abstract DeviceElementMask Upload(ComputeDevice device);

    /// <summary>A mask's device form: a mask source plus the buffers it owns.</summary>
    private protected sealed class DeviceElementMask(IMaskSource source, DeviceBuffers? buffers = null) : IMaskSource, IDisposable
    {
        public void Accept(IMaskVisitor visitor) => source.Accept(visitor);

        public void Dispose() => buffers?.Dispose();
    }

    /// <summary>A mask source for a struct without device data.</summary>
    private protected sealed class StructSource<TMask>(TMask mask) : IMaskSource
        where TMask : struct, IElementMask
    {
        public void Accept(IMaskVisitor visitor) => visitor.Visit(mask);
    }
}
