using ILGPU;
using Natten.Kernels.Common;

namespace Natten.Kernels.BlockSparse;

/// <summary>
/// The element predicate of a block-sparse pattern's partial blocks: whether query token
/// <c>query</c> of (batch, query head) sees key token <c>key</c>. The kernels are generic over it
/// (<c>where TMask : struct, IElementMask</c>), so a new pattern is a new struct, never a kernel edit;
/// full blocks run with <see cref="AllowAll"/>, which the compiler folds away. Token indices are
/// positions in the flat query and key sequences.
/// </summary>
internal interface IElementMask
{
    bool Allows(int batch, int head, int query, int key);
}

/// <summary>Every pair: the mask of full blocks.</summary>
internal readonly struct AllowAll : IElementMask
{
    public bool Allows(int batch, int head, int query, int key) => true;
}

/// <summary>Both masks allow the pair: composes patterns (a document mask AND causal, say) without a new struct.</summary>
internal readonly struct AndMask<TFirst, TSecond> : IElementMask
    where TFirst : struct, IElementMask
    where TSecond : struct, IElementMask
{
    private readonly TFirst _first;
    private readonly TSecond _second;

    public AndMask(TFirst first, TSecond second) => (_first, _second) = (first, second);

    public bool Allows(int batch, int head, int query, int key)
        => _first.Allows(batch, head, query, key) && _second.Allows(batch, head, query, key);
}

/// <summary>
/// A dense boolean mask stored as bits: row (plane, query) holds <c>wordsPerRow</c> 32-bit words, key
/// <c>k</c> in bit <c>k mod 32</c> of word <c>k / 32</c>. Planes are [batch, head]; a mask shared by
/// every batch entry (or head) has one plane on that axis.
/// </summary>
internal readonly struct DenseBitMask : IElementMask
{
    private readonly ArrayView<uint> _bits;
    private readonly int _queryTokens;
    private readonly int _wordsPerRow;
    private readonly int _batches;
    private readonly int _heads;

    public DenseBitMask(ArrayView<uint> bits, int queryTokens, int wordsPerRow, int batches, int heads)
        => (_bits, _queryTokens, _wordsPerRow, _batches, _heads) = (bits, queryTokens, wordsPerRow, batches, heads);

    public bool Allows(int batch, int head, int query, int key)
    {
        var plane = ((_batches == 1 ? 0 : batch) * _heads) + (_heads == 1 ? 0 : head);
        var word = _bits[((((long)plane * _queryTokens) + query) * _wordsPerRow) + (key >> 5)];
        return ((word >> (key & 31)) & 1u) != 0;
    }
}

/// <summary>
/// FlashAttention's <c>window_size = (left, right)</c>: query <c>i</c> sees keys
/// <c>i + offset − left ≤ j ≤ i + offset + right</c>, truncated at the sequence ends (never shifted);
/// <c>offset = Nk − Nq</c> aligns the last query with the last key. <see cref="Unbounded"/> removes
/// a side's limit; <c>(Unbounded, 0)</c> is causal attention.
/// </summary>
internal readonly struct SlidingWindowMask : IElementMask
{
    public const int Unbounded = int.MaxValue;

    private readonly int _left;
    private readonly int _right;
    private readonly int _offset;

    public SlidingWindowMask(int left, int right, int offset) => (_left, _right, _offset) = (left, right, offset);

    public bool Allows(int batch, int head, int query, int key)
    {
        var distance = key - query - _offset;
        return distance >= -_left && distance <= _right;
    }
}

/// <summary>
/// Segment (document, region) ids per token: a pair is allowed iff both tokens carry the same id and
/// it is not negative (a negative id marks padding: such a key is seen by no query, such a query sees
/// nothing). Ids are [batch, tokens]; ids shared by every batch entry have one row.
/// </summary>
internal readonly struct SegmentMask : IElementMask
{
    private readonly ArrayView<int> _querySegments;
    private readonly ArrayView<int> _keySegments;
    private readonly int _queryTokens;
    private readonly int _keyTokens;
    private readonly int _queryBatches;
    private readonly int _keyBatches;

    public SegmentMask(ArrayView<int> querySegments, ArrayView<int> keySegments, int queryTokens, int keyTokens, int queryBatches, int keyBatches)
    {
        (_querySegments, _keySegments) = (querySegments, keySegments);
        (_queryTokens, _keyTokens, _queryBatches, _keyBatches) = (queryTokens, keyTokens, queryBatches, keyBatches);
    }

    public bool Allows(int batch, int head, int query, int key)
    {
        var q = _querySegments[((long)(_queryBatches == 1 ? 0 : batch) * _queryTokens) + query];
        var k = _keySegments[((long)(_keyBatches == 1 ? 0 : batch) * _keyTokens) + key];
        return q == k && q >= 0;
    }
}

/// <summary>
/// A window on a 1–3D grid of tokens (self-attention, padded to three axes like <see cref="ProblemParams"/>):
/// per axis, queries are grouped in runs of <c>g</c> and a query whose group starts at <c>s</c> sees the
/// key coordinates <c>s − before … s + g − 1 + after</c> that exist (keys outside the grid are absent,
/// nothing is shifted). <c>g = b, before = after = h</c> is HaloNet's blocked local attention with halo
/// <c>h</c>; <c>g = 1</c> a truncated sliding window. Tokens are ordered in tiles of
/// <c>t0 × t1 × t2</c> (tile-major, row-major inside a tile; tiles of 1 are plain row-major order), so a
/// HaloNet block can be one contiguous query block.
/// </summary>
internal readonly struct GridWindowMask : IElementMask
{
    private readonly GridAxis _axis0;
    private readonly GridAxis _axis1;
    private readonly GridAxis _axis2;

    public GridWindowMask(GridAxis axis0, GridAxis axis1, GridAxis axis2) => (_axis0, _axis1, _axis2) = (axis0, axis1, axis2);

    public GridAxis Axis0 => _axis0;

    public GridAxis Axis1 => _axis1;

    public GridAxis Axis2 => _axis2;

    public bool Allows(int batch, int head, int query, int key)
    {
        Coordinates(query, out var q0, out var q1, out var q2);
        Coordinates(key, out var k0, out var k1, out var k2);
        return _axis2.Allows(q2, k2) && _axis1.Allows(q1, k1) && _axis0.Allows(q0, k0);
    }

    /// <summary>The grid coordinates of a token in the tiled order.</summary>
    public void Coordinates(int token, out int x0, out int x1, out int x2)
    {
        var tileSize = _axis0.Tile * _axis1.Tile * _axis2.Tile;
        var tile = token / tileSize;
        var inside = token % tileSize;
        var tiles1 = _axis1.Length / _axis1.Tile;
        var tiles2 = _axis2.Length / _axis2.Tile;
        x2 = ((tile % tiles2) * _axis2.Tile) + (inside % _axis2.Tile);
        x1 = ((tile / tiles2 % tiles1) * _axis1.Tile) + (inside / _axis2.Tile % _axis1.Tile);
        x0 = ((tile / tiles2 / tiles1) * _axis0.Tile) + (inside / _axis2.Tile / _axis1.Tile);
    }
}

/// <summary>One axis of a <see cref="GridWindowMask"/>: length, token tile, query group and the window's reach.</summary>
internal readonly struct GridAxis
{
    public readonly int Length;
    public readonly int Tile;
    public readonly int Group;
    public readonly int Before;
    public readonly int After;

    public GridAxis(int length, int tile, int group, int before, int after)
        => (Length, Tile, Group, Before, After) = (length, tile, group, before, after);

    /// <summary>An axis of extent 1 (padding for lower ranks): its single coordinate sees itself.</summary>
    public static GridAxis Single => new(1, 1, 1, 0, 0);

    public bool Allows(int queryCoordinate, int keyCoordinate)
    {
        var start = queryCoordinate / Group * Group;
        return keyCoordinate >= start - Before && keyCoordinate <= start + Group - 1 + After;
    }

    /// <summary>First key coordinate the query's window reaches (may lie before the grid).</summary>
    public int WindowStart(int queryCoordinate) => (queryCoordinate / Group * Group) - Before;

    /// <summary>Last key coordinate the query's window reaches (may lie past the grid).</summary>
    public int WindowEnd(int queryCoordinate) => (queryCoordinate / Group * Group) + Group - 1 + After;
}

/// <summary>
/// Neighborhood attention's window (docs/SEMANTICS.md: kernel size, stride, dilation, causal per axis) on
/// a 1–3D grid of tokens in row-major order, through the kernels' shared <see cref="WindowRule"/>: NA as
/// a block-sparse pattern, e.g. to add NATTEN's relative positional bias.
/// </summary>
internal readonly struct NeighborhoodMask : IElementMask
{
    private readonly ProblemParams _p;

    public NeighborhoodMask(ProblemParams p) => _p = p;

    public bool Allows(int batch, int head, int query, int key)
    {
        _p.Coordinates(query, out var x0, out var x1, out var x2);
        _p.Coordinates(key, out var y0, out var y1, out var y2);
        return Axis(x0, y0, _p.N0, _p.K0, _p.S0, _p.D0, _p.C0)
            && Axis(x1, y1, _p.N1, _p.K1, _p.S1, _p.D1, _p.C1)
            && Axis(x2, y2, _p.N2, _p.K2, _p.S2, _p.D2, _p.C2);
    }

    private static bool Axis(int query, int key, int n, int kernel, int stride, int dilation, int causal)
    {
        WindowRule.KeyRange(query, n, kernel, stride, dilation, causal != 0, out var first, out var count);
        var offset = key - first;
        return offset >= 0 && offset % dilation == 0 && offset / dilation < count;
    }
}
