using Natten.Kernels.BlockSparse;
using Natten.Kernels.Runtime;

namespace Natten.BlockSparse;

/// <summary>FlashAttention's window_size (see <see cref="ElementMask.SlidingWindow"/>), classified analytically.</summary>
internal sealed class SlidingWindowElementMask : ElementMask
{
    public SlidingWindowElementMask(int left, int right, int offset) => (Left, Right, Offset) = (left, right, offset);

    /// <summary>Keys to the left, −1 for no limit.</summary>
    public int Left { get; }

    /// <summary>Keys to the right, −1 for no limit.</summary>
    public int Right { get; }

    public int Offset { get; }

    public override bool Allows(int batch, int head, int query, int key)
    {
        var distance = (long)key - query - Offset;
        return (Left < 0 || distance >= -Left) && (Right < 0 || distance <= Right);
    }

    /// <summary>
    /// Each query's window [lo(q), hi(q)] moves right with q, one key per query, and is never empty, so the
    /// block's first and last queries decide: no pair when the last query's window ends before k0 or the
    /// first query's starts after k1 − 1; all pairs when every window covers [k0, k1 − 1].
    /// </summary>
    internal override BlockKind? Classify(int batch, int head, int q0, int q1, int k0, int k1)
    {
        long Lo(int q) => Left < 0 ? long.MinValue : (long)q + Offset - Left;
        long Hi(int q) => Right < 0 ? long.MaxValue : (long)q + Offset + Right;
        if (Hi(q1 - 1) < k0 || Lo(q0) > k1 - 1)
        {
            return null;
        }

        return Lo(q1 - 1) <= k0 && Hi(q0) >= k1 - 1 ? BlockKind.Full : BlockKind.Partial;
    }

    private protected override DeviceElementMask Upload(ComputeDevice device)
        => new(new StructSource<SlidingWindowMask>(new SlidingWindowMask(
            Left < 0 ? SlidingWindowMask.Unbounded : Left, Right < 0 ? SlidingWindowMask.Unbounded : Right, Offset)));
}

/// <summary>Segment ids (see <see cref="ElementMask.Segments(ReadOnlySpan{int}, ReadOnlySpan{int}, int)"/>).</summary>
internal sealed class SegmentElementMask : ElementMask
{
    private readonly int[] _query;
    private readonly int[] _key;
    private readonly int _batches;

    public SegmentElementMask(int[] querySegments, int[] keySegments, int batches)
        => (_query, _key, _batches) = (querySegments, keySegments, batches);

    public override int Batches => _batches;

    public override int? QueryTokens => _query.Length / _batches;

    public override int? KeyTokens => _key.Length / _batches;

    public override bool Allows(int batch, int head, int query, int key)
    {
        var b = _batches == 1 ? 0 : batch;
        var q = _query[(b * QueryTokens!.Value) + query];
        return q >= 0 && q == _key[(b * KeyTokens!.Value) + key];
    }

    /// <summary>
    /// Blocks inside one segment on both sides (the common case for documents and regions) are decided
    /// from their ids alone; mixed blocks are brute-forced.
    /// </summary>
    internal override BlockKind? Classify(int batch, int head, int q0, int q1, int k0, int k1)
    {
        var b = _batches == 1 ? 0 : batch;
        var query = Uniform(_query.AsSpan((b * QueryTokens!.Value) + q0, q1 - q0));
        var key = Uniform(_key.AsSpan((b * KeyTokens!.Value) + k0, k1 - k0));
        if (query is { } q && key is { } k)
        {
            return q >= 0 && q == k ? BlockKind.Full : null;
        }

        return base.Classify(batch, head, q0, q1, k0, k1);
    }

    private static int? Uniform(ReadOnlySpan<int> ids) => ids.IndexOfAnyExcept(ids[0]) < 0 ? ids[0] : null;

    private protected override DeviceElementMask Upload(ComputeDevice device)
    {
        var buffers = new DeviceBuffers();
        var mask = new SegmentMask(
            buffers.Upload<int>(device, _query), buffers.Upload<int>(device, _key), QueryTokens!.Value, KeyTokens!.Value, _batches, _batches);
        return new DeviceElementMask(new StructSource<SegmentMask>(mask), buffers);
    }
}

/// <summary>A dense boolean mask kept as bits (see <see cref="ElementMask.Dense"/>).</summary>
internal sealed class DenseElementMask : ElementMask
{
    private readonly uint[] _bits;
    private readonly int _queryTokens;
    private readonly int _keyTokens;
    private readonly int _heads;
    private readonly int _batches;

    public DenseElementMask(ReadOnlySpan<bool> mask, int queryTokens, int keyTokens, int heads, int batches)
    {
        (_queryTokens, _keyTokens, _heads, _batches) = (queryTokens, keyTokens, heads, batches);
        WordsPerRow = (keyTokens + 31) / 32;
        _bits = new uint[(long)batches * heads * queryTokens * WordsPerRow];
        var rows = (long)batches * heads * queryTokens;
        for (long r = 0; r < rows; r++)
        {
            var source = mask.Slice((int)(r * keyTokens), keyTokens);
            for (var k = 0; k < keyTokens; k++)
            {
                if (source[k])
                {
                    _bits[(r * WordsPerRow) + (k >> 5)] |= 1u << (k & 31);
                }
            }
        }
    }

    public int WordsPerRow { get; }

    public override int Batches => _batches;

    public override int Heads => _heads;

    public override int? QueryTokens => _queryTokens;

    public override int? KeyTokens => _keyTokens;

    public override bool Allows(int batch, int head, int query, int key)
    {
        var plane = ((_batches == 1 ? 0 : batch) * _heads) + (_heads == 1 ? 0 : head);
        var word = _bits[((((long)plane * _queryTokens) + query) * WordsPerRow) + (key >> 5)];
        return ((word >> (key & 31)) & 1u) != 0;
    }

    private protected override DeviceElementMask Upload(ComputeDevice device)
    {
        var buffers = new DeviceBuffers();
        var mask = new DenseBitMask(buffers.Upload<uint>(device, _bits), _queryTokens, WordsPerRow, _batches, _heads);
        return new DeviceElementMask(new StructSource<DenseBitMask>(mask), buffers);
    }
}

/// <summary>A window on a token grid (see <see cref="ElementMask.GridWindow"/>); axes padded to three.</summary>
internal sealed class GridElementMask : ElementMask
{
    private readonly GridWindowMask _mask;

    public GridElementMask(GridAxis[] axes) => _mask = new GridWindowMask(axes[0], axes[1], axes[2]);

    public override int? QueryTokens => _mask.Axis0.Length * _mask.Axis1.Length * _mask.Axis2.Length;

    public override int? KeyTokens => QueryTokens;

    public override bool Allows(int batch, int head, int query, int key) => _mask.Allows(batch, head, query, key);

    /// <summary>
    /// Each query's window is a box, so per axis: no pair when the keys' coordinate range misses the union
    /// of the queries' windows, all pairs when it lies inside their intersection on every axis; the
    /// (rare) rest brute force. Keeps HaloNet masks of large grids cheap to build.
    /// </summary>
    internal override BlockKind? Classify(int batch, int head, int q0, int q1, int k0, int k1)
    {
        var (queries, keys) = (Bounds(q0, q1), Bounds(k0, k1));
        GridAxis[] axes = [_mask.Axis0, _mask.Axis1, _mask.Axis2];
        var inside = true;
        for (var a = 0; a < 3; a++)
        {
            var (qMin, qMax) = queries[a];
            var (kMin, kMax) = keys[a];
            if (kMax < axes[a].WindowStart(qMin) || kMin > axes[a].WindowEnd(qMax))
            {
                return null;
            }

            inside &= kMin >= axes[a].WindowStart(qMax) && kMax <= axes[a].WindowEnd(qMin);
        }

        return inside ? BlockKind.Full : base.Classify(batch, head, q0, q1, k0, k1);
    }

    private protected override DeviceElementMask Upload(ComputeDevice device) => new(new StructSource<GridWindowMask>(_mask));

    /// <summary>Per axis, the smallest and largest coordinate of tokens [t0, t1).</summary>
    private (int Min, int Max)[] Bounds(int t0, int t1)
    {
        var bounds = new (int Min, int Max)[] { (int.MaxValue, int.MinValue), (int.MaxValue, int.MinValue), (int.MaxValue, int.MinValue) };
        for (var t = t0; t < t1; t++)
        {
            _mask.Coordinates(t, out var x0, out var x1, out var x2);
            bounds[0] = (Math.Min(bounds[0].Min, x0), Math.Max(bounds[0].Max, x0));
            bounds[1] = (Math.Min(bounds[1].Min, x1), Math.Max(bounds[1].Max, x1));
            bounds[2] = (Math.Min(bounds[2].Min, x2), Math.Max(bounds[2].Max, x2));
        }

        return bounds;
    }
}

/// <summary>The conjunction of two masks (see <see cref="ElementMask.And"/>).</summary>
internal sealed class AndElementMask : ElementMask
{
    private readonly ElementMask _first;
    private readonly ElementMask _second;

    public AndElementMask(ElementMask first, ElementMask second) => (_first, _second) = (first, second);

    public override int Batches => Math.Max(_first.Batches, _second.Batches);

    public override int Heads => Math.Max(_first.Heads, _second.Heads);

    public override int? QueryTokens => _first.QueryTokens ?? _second.QueryTokens;

    public override int? KeyTokens => _first.KeyTokens ?? _second.KeyTokens;

    public override bool Allows(int batch, int head, int query, int key)
        => _first.Allows(batch, head, query, key) && _second.Allows(batch, head, query, key);

    internal override BlockKind? Classify(int batch, int head, int q0, int q1, int k0, int k1)
    {
        var first = _first.Classify(batch, head, q0, q1, k0, k1);
        if (first is null)
        {
            return null;
        }

        var second = _second.Classify(batch, head, q0, q1, k0, k1);
        if (second is null)
        {
            return null;
        }

        return first == BlockKind.Full ? second : second == BlockKind.Full ? first : base.Classify(batch, head, q0, q1, k0, k1);
    }

    private protected override DeviceElementMask Upload(ComputeDevice device)
        => new(BlockSparseDispatch.And(_first.OnDevice(device), _second.OnDevice(device)));
}

/// <summary>Neighborhood attention's window as an element mask (see <see cref="BlockMasks.Neighborhood"/>).</summary>
internal sealed class NeighborhoodElementMask(Natten.Kernels.Common.ProblemParams p) : ElementMask
{
    public override int? QueryTokens => (int)p.Tokens;

    public override int? KeyTokens => (int)p.Tokens;

    public override bool Allows(int batch, int head, int query, int key) => new NeighborhoodMask(p).Allows(batch, head, query, key);

    private protected override DeviceElementMask Upload(ComputeDevice device) => new(new StructSource<NeighborhoodMask>(new NeighborhoodMask(p)));
}
