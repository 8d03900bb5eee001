namespace Natten.Reference;

/// <summary>
/// The sizes of one attention problem over flat token sequences whose query and key lengths may
/// differ (block-sparse, cross and padded attention), heads-last: Q is <c>[Batch, QueryTokens, Heads, HeadDim]</c>,
/// K and V are <c>[Batch, KeyTokens, KvHeads, HeadDim | ValueDim]</c>, O is <c>[Batch, QueryTokens, Heads, ValueDim]</c>
/// and LSE is <c>[Batch, QueryTokens, Heads]</c>.
/// </summary>
/// <param name="Batch">Batch size.</param>
/// <param name="QueryTokens">Query tokens per batch entry.</param>
/// <param name="KeyTokens">Key/value tokens per batch entry.</param>
/// <param name="Heads">Query heads.</param>
/// <param name="KvHeads">Key/value heads; query head <c>h</c> reads kv head <c>h / (Heads / KvHeads)</c>.</param>
/// <param name="HeadDim">Query/key head dimension.</param>
/// <param name="ValueDim">Value head dimension.</param>
/// <param name="Scale">Score scale: <c>s = Scale * q·k (+ bias)</c>.</param>
public sealed record MaskedAttentionDims(
    int Batch, int QueryTokens, int KeyTokens, int Heads, int KvHeads, int HeadDim, int ValueDim, double Scale)
{
    /// <summary>The kv head read by query head <paramref name="h"/>.</summary>
    public int KvHeadOf(int h) => h / (Heads / KvHeads);

    /// <summary>Offset of element 0 of query row (b, t, h).</summary>
    public long QueryOffset(int b, int t, int h) => (((long)b * QueryTokens + t) * Heads + h) * HeadDim;

    /// <summary>Offset of element 0 of key row (b, t, kvHead).</summary>
    public long KeyOffset(int b, int t, int hk) => (((long)b * KeyTokens + t) * KvHeads + hk) * HeadDim;

    /// <summary>Offset of element 0 of value row (b, t, kvHead).</summary>
    public long ValueOffset(int b, int t, int hk) => (((long)b * KeyTokens + t) * KvHeads + hk) * ValueDim;

    /// <summary>Offset of element 0 of output row (b, t, h).</summary>
    public long OutputOffset(int b, int t, int h) => (((long)b * QueryTokens + t) * Heads + h) * ValueDim;

    /// <summary>Index of the LSE entry (b, t, h).</summary>
    public long LseIndex(int b, int t, int h) => ((long)b * QueryTokens + t) * Heads + h;
}
