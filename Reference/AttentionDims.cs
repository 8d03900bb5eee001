namespace Natten.Reference;

/// <summary>
/// The sizes of one attention problem in the heads-last layout, with spatial axes flattened to a
/// token count: Q is <c>[Batch, Tokens, Heads, HeadDim]</c>, K and V are
/// <c>[Batch, Tokens, KvHeads, HeadDim | ValueDim]</c>, additional K/V are
/// <c>[Batch, AdditionalTokens, KvHeads, HeadDim | ValueDim]</c>, O is <c>[Batch, Tokens, Heads, ValueDim]</c>
/// and LSE is <c>[Batch, Tokens, Heads]</c>.
/// </summary>
/// <param name="Batch">Batch size.</param>
/// <param name="Tokens">Number of query (and key) tokens per batch entry.</param>
/// <param name="Heads">Query heads.</param>
/// <param name="KvHeads">Key/value heads; query head <c>h</c> reads kv head <c>h / (Heads / KvHeads)</c>.</param>
/// <param name="HeadDim">Query/key head dimension.</param>
/// <param name="ValueDim">Value head dimension.</param>
/// <param name="Scale">Score scale: <c>s = Scale * q·k</c>.</param>
/// <param name="AdditionalTokens">Extra keys/values every query attends to.</param>
public sealed record AttentionDims(
    int Batch, int Tokens, int Heads, int KvHeads, int HeadDim, int ValueDim, double Scale, int AdditionalTokens = 0)
{
    /// <summary>The kv head read by query head <paramref name="h"/>.</summary>
    public int KvHeadOf(int h) => h / (Heads / KvHeads);

    /// <summary>Offset of element 0 of query row (b, t, h).</summary>
    public long QueryOffset(int b, int t, int h) => (((long)b * Tokens + t) * Heads + h) * HeadDim;

    /// <summary>Offset of element 0 of key row (b, t, kvHead).</summary>
    public long KeyOffset(int b, int t, int hk) => (((long)b * Tokens + t) * KvHeads + hk) * HeadDim;

    /// <summary>Offset of element 0 of value row (b, t, kvHead).</summary>
    public long ValueOffset(int b, int t, int hk) => (((long)b * Tokens + t) * KvHeads + hk) * ValueDim;

    /// <summary>Offset of element 0 of additional key row (b, t, kvHead).</summary>
    public long AdditionalKeyOffset(int b, int t, int hk) => (((long)b * AdditionalTokens + t) * KvHeads + hk) * HeadDim;

    /// <summary>Offset of element 0 of additional value row (b, t, kvHead).</summary>
    public long AdditionalValueOffset(int b, int t, int hk) => (((long)b * AdditionalTokens + t) * KvHeads + hk) * ValueDim;

    /// <summary>Offset of element 0 of output row (b, t, h).</summary>
    public long OutputOffset(int b, int t, int h) => (((long)b * Tokens + t) * Heads + h) * ValueDim;

    /// <summary>Index of the LSE entry (b, t, h).</summary>
    public long LseIndex(int b, int t, int h) => ((long)b * Tokens + t) * Heads + h;
}
