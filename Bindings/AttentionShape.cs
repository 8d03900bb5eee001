namespace Natten;

/// <summary>
/// Tensor sizes in NATTEN's heads-last layout: Q <c>[Batch, X1(, X2(, X3)), Heads, HeadDim]</c>,
/// K <c>[Batch, X…, KvHeads, HeadDim]</c>, V <c>[Batch, X…, KvHeads, ValueDim]</c>,
/// output <c>[Batch, X…, Heads, ValueDim]</c>, LSE <c>[Batch, X…, Heads]</c>; additional K/V
/// <c>[Batch, AdditionalTokens, KvHeads, HeadDim | ValueDim]</c>. Row-major, innermost last.
/// </summary>
/// <param name="Batch">Batch size.</param>
/// <param name="Spatial">Spatial extents; their count is the rank (1 to 3). A single int means a 1D problem.</param>
/// <param name="Heads">Query heads.</param>
/// <param name="HeadDim">Query/key head dimension.</param>
public readonly record struct AttentionShape(int Batch, AxisValues Spatial, int Heads, int HeadDim)
{
    private readonly int _kvHeads;
    private readonly int _valueDim;

    /// <summary>Key/value heads (GQA/MQA); 0 (the default) means <see cref="Heads"/>. Must divide <see cref="Heads"/>.</summary>
    public int KvHeads { get => _kvHeads == 0 ? Heads : _kvHeads; init => _kvHeads = value; }

    /// <summary>Value head dimension; 0 (the default) means <see cref="HeadDim"/>.</summary>
    public int ValueDim { get => _valueDim == 0 ? HeadDim : _valueDim; init => _valueDim = value; }

    /// <summary>Number of additional key/value tokens every query attends to (default 0).</summary>
    public int AdditionalTokens { get; init; }

    /// <summary>Number of spatial axes.</summary>
    public int Rank => Spatial.Count;

    /// <summary><c>B=1 16x16 H=4/2 D=32 Dv=32</c>.</summary>
    public override string ToString()
        => $"B={Batch} {Spatial} H={Heads}/{KvHeads} D={HeadDim} Dv={ValueDim}" + (AdditionalTokens > 0 ? $" +{AdditionalTokens} kv" : string.Empty);
}
