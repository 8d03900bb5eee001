namespace Natten.Kernels.Fused;

/// <summary>
/// Which staged keys a query may see, per element. The kernel body is generic over the mask, so a
/// new attention pattern (block-sparse, sliding window, HaloNet) is a new struct, not a kernel edit.
/// Coordinates are the key's group coordinates (or, for additional tokens, its index on axis 2).
/// </summary>
internal interface IKeyMask
{
    bool Allows(int j0, int j1, int j2);
}

/// <summary>Every staged key is visible: KV sub-tiles inside every window of the query tile.</summary>
internal readonly struct NoMask : IKeyMask
{
    public bool Allows(int j0, int j1, int j2) => true;
}

/// <summary>The query's own window, [start, end) per axis in group coordinates: boundary sub-tiles.</summary>
internal readonly struct WindowMask : IKeyMask
{
    private readonly int _s0, _e0, _s1, _e1, _s2, _e2;

    public WindowMask(int s0, int e0, int s1, int e1, int s2, int e2)
    {
        (_s0, _e0, _s1, _e1, _s2, _e2) = (s0, e0, s1, e1, s2, e2);
    }

    public bool Allows(int j0, int j1, int j2)
        => j0 >= _s0 && j0 < _e0 && j1 >= _s1 && j1 < _e1 && j2 >= _s2 && j2 < _e2;
}

/// <summary>Keys with index below a count on axis 2: the last, partial chunk of additional tokens.</summary>
internal readonly struct PrefixMask : IKeyMask
{
    private readonly int _count;

    public PrefixMask(int count) => _count = count;

    public bool Allows(int j0, int j1, int j2) => j2 < _count;
}
