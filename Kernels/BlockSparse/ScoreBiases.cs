using ILGPU;

namespace Natten.Kernels.BlockSparse;

/// <summary>
/// An additive score bias (in score units, after the scale): <c>s = scale · q·k + bias(b, h, q, k)</c>.
/// Like <see cref="IElementMask"/>, a generic struct of the kernels; <see cref="NoBias"/> folds away.
/// </summary>
internal interface IScoreBias
{
    float Bias(int batch, int head, int query, int key);

    /// <summary>The bias parameter (flat index into the bias's own values) this pair reads, or −1 when it reads none.</summary>
    long IndexOf(int batch, int head, int query, int key);
}

/// <summary>No bias.</summary>
internal readonly struct NoBias : IScoreBias
{
    public float Bias(int batch, int head, int query, int key) => 0f;

    public long IndexOf(int batch, int head, int query, int key) => -1;
}

/// <summary>A dense bias tensor <c>[batches, heads, Nq, Nk]</c>; one plane on an axis broadcasts over it.</summary>
internal readonly struct DenseBias : IScoreBias
{
    private readonly ArrayView<float> _values;
    private readonly int _queryTokens;
    private readonly int _keyTokens;
    private readonly int _batches;
    private readonly int _heads;

    public DenseBias(ArrayView<float> values, int queryTokens, int keyTokens, int batches, int heads)
        => (_values, _queryTokens, _keyTokens, _batches, _heads) = (values, queryTokens, keyTokens, batches, heads);

    public float Bias(int batch, int head, int query, int key) => _values[IndexOf(batch, head, query, key)];

    public long IndexOf(int batch, int head, int query, int key)
    {
        var plane = ((_batches == 1 ? 0 : batch) * _heads) + (_heads == 1 ? 0 : head);
        return ((((long)plane * _queryTokens) + query) * _keyTokens) + key;
    }
}

/// <summary>
/// NATTEN's relative positional bias (RPB) for neighborhood attention on a 1–3D grid of tokens in
/// row-major order: a table <c>[heads, 2·K0 − 1, 2·K1 − 1, 2·K2 − 1]</c> (padded axes have K = 1)
/// indexed per axis by <c>(j − i) / d + K − 1</c> for query coordinate i and key coordinate j
/// (dilation d). Pairs farther apart than the table reaches (outside any K-window) get no bias, so a
/// pattern wider than the neighborhood never reads outside the table. A table with one head slice is
/// shared by every head.
/// </summary>
internal readonly struct RelativePositionBias : IScoreBias
{
    private readonly ArrayView<float> _table;
    private readonly int _heads;
    private readonly int _n1;
    private readonly int _n2;
    private readonly int _k0;
    private readonly int _k1;
    private readonly int _k2;
    private readonly int _d0;
    private readonly int _d1;
    private readonly int _d2;

    public RelativePositionBias(ArrayView<float> table, int heads, int n1, int n2, int k0, int k1, int k2, int d0, int d1, int d2)
    {
        _table = table;
        _heads = heads;
        (_n1, _n2) = (n1, n2);
        (_k0, _k1, _k2) = (k0, k1, k2);
        (_d0, _d1, _d2) = (d0, d1, d2);
    }

    public float Bias(int batch, int head, int query, int key)
    {
        var index = IndexOf(head, query, key);
        return index < 0 ? 0f : _table[index];
    }

    public long IndexOf(int batch, int head, int query, int key) => IndexOf(head, query, key);

    /// <summary>The table entry of a (head, query, key) pair, or −1 when the pair is beyond the table's reach.</summary>
    public long IndexOf(int head, int query, int key)
    {
        var i2 = query % _n2;
        var i1 = query / _n2 % _n1;
        var i0 = query / _n2 / _n1;
        var j2 = key % _n2;
        var j1 = key / _n2 % _n1;
        var j0 = key / _n2 / _n1;
        var w0 = (2 * _k0) - 1;
        var w1 = (2 * _k1) - 1;
        var w2 = (2 * _k2) - 1;
        var r0 = ((j0 - i0) / _d0) + _k0 - 1;
        var r1 = ((j1 - i1) / _d1) + _k1 - 1;
        var r2 = ((j2 - i2) / _d2) + _k2 - 1;
        if (r0 < 0 || r0 >= w0 || r1 < 0 || r1 >= w1 || r2 < 0 || r2 >= w2)
        {
            return -1;
        }

        var slice = _heads == 1 ? 0 : head;
        return (((((((long)slice * w0) + r0) * w1) + r1) * w2) + r2);
    }
}
