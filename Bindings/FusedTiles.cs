namespace Natten;

/// <summary>
/// Tile shapes of the fused kernel, per axis: the query tile (one thread per query, so its product
/// is the group size) and the KV sub-tile staged in shared memory at once. Extents are in
/// dilation-group coordinates. Leave <see cref="NeighborhoodAttentionOptions.Tiles"/> null for the
/// defaults (64 / 8×8 / 4×4×4 queries for head dims up to 64, half that above); `natten profile`
/// can search them.
/// </summary>
/// <param name="Query">Query tile extent per axis (one value = every axis), e.g. (8, 8).</param>
/// <param name="KeyValue">KV sub-tile extent per axis, e.g. (4, 4).</param>
public readonly record struct FusedTiles(AxisValues Query, AxisValues KeyValue)
{
    /// <summary><c>Q 8x8 / KV 4x4</c>.</summary>
    public override string ToString() => $"Q {Query} / KV {KeyValue}";
}
