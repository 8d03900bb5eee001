namespace Natten;

/// <summary>
/// Tensor sizes of block-sparse attention over flat token sequences, heads-last like the rest of the
/// library: Q <c>[Batch, QueryTokens, Heads, HeadDim]</c>, K <c>[Batch, KeyTokens, KvHeads, HeadDim]</c>,
/// V <c>[Batch, KeyTokens, KvHeads, ValueDim]</c>, output <c>[Batch, QueryTokens, Heads, ValueDim]</c>,
/// LSE <c>[Batch, QueryTokens, Heads]</c>. A 2D/3D token grid is flattened in the order its
/// <see cref="BlockMask"/> assumes.
/// </summary>
/// <param name="Batch">Batch size.</param>
/// <param name="QueryTokens">Query tokens per batch entry (Nq); must equal the mask's.</param>
/// <param name="KeyTokens">Key/value tokens per batch entry (Nk); must equal the mask's.</param>
/// <param name="Heads">Query heads.</param>
/// <param name="HeadDim">Query/key head dimension.</param>
public readonly record struct BlockSparseShape(int Batch, int QueryTokens, int KeyTokens, int Heads, int HeadDim)
{
    private readonly int _kvHeads;
    private readonly int _valueDim;

    /// <summary>Key/value heads (GQA/MQA); 0 (the default) means <see cref="Heads"/>. Must divide <see cref="Heads"/>.</summary>
    public int KvHeads { get => _kvHeads == 0 ? Heads : _kvHeads; init => _kvHeads = value; }

    /// <summary>Value head dimension; 0 (the default) means <see cref="HeadDim"/>.</summary>
    public int ValueDim { get => _valueDim == 0 ? HeadDim : _valueDim; init => _valueDim = value; }

    /// <summary><c>B=1 Nq=256 Nk=256 H=4/2 D=32 Dv=32</c>.</summary>
    public override string ToString() => $"B={Batch} Nq={QueryTokens} Nk={KeyTokens} H={Heads}/{KvHeads} D={HeadDim} Dv={ValueDim}";
}
