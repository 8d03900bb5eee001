namespace Natten;

/// <summary>
/// Tile shapes of the fused kernel, per axis: the query tile (one thread per query, so its product
/// is the group size) and the KV sub-tile staged in shared memory at once. Extents are in
/// dilation-group coordinates. Leave <see cref="NeighborhoodAttentionOptions.Tiles"/> null for the
/// defaults (64 / 8×8 / 4×4×4 queries for head dims up to 64, half that above); `natten profile`
/// can search them, and <see cref="FusedTuning"/> lists and simulates them.
/// </summary>
/// <param name="Query">Query tile extent per axis (one value = every axis), e.g. (8, 8).</param>
/// <param name="KeyValue">KV sub-tile extent per axis, e.g. (4, 4).</param>
public readonly record struct FusedTiles(AxisValues Query, AxisValues KeyValue)
{
    /// <summary><c>Q 8x8 / KV 4x4</c>.</summary>
    public override string ToString() => $"Q {Query} / KV {KeyValue}";

    /// <summary>The command-line form <c>8x8/4x4</c> that <see cref="Parse"/> reads back.</summary>
    public string ToArgument() => $"{Query}/{KeyValue}";

    /// <summary>
    /// Parses <c>Q/KV</c>, each part one extent for every axis or one per axis: <c>8x8/4x4</c>,
    /// <c>64/16</c>, <c>4x4x4/2x2x4</c>. Whether the extents fit a problem and a device is checked
    /// later (validation, <see cref="FusedTuning.CanRun"/>).
    /// </summary>
    /// <exception cref="FormatException">The text is not two x-separated integer lists around one '/'.</exception>
    public static FusedTiles Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var parts = text.Split('/');
        if (parts.Length != 2 || parts[0].Length == 0 || parts[1].Length == 0)
        {
            throw new FormatException($"'{text}' is not a tile pair Q/KV, e.g. 8x8/4x4 (query tile / KV sub-tile, 'x' between axes).");
        }

        try
        {
            return new FusedTiles(AxisValues.Parse(parts[0].Trim()), AxisValues.Parse(parts[1].Trim()));
        }
        catch (FormatException ex)
        {
            throw new FormatException($"'{text}' is not a tile pair Q/KV, e.g. 8x8/4x4: {ex.Message}", ex);
        }
    }
}
